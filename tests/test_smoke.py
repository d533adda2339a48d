from conftest import wait_until


def test_a_submitted_job_runs_with_its_params_and_the_queue_shuts_down(make_queue):
    queue = make_queue("echo")
    done = []
    queue.on("job_success", done.append)
    queue.start()
    job_id = queue.submit_job("echo", params={"a": [1, 2], "b": "x"})
    wait_until(lambda: done)
    assert done[0].id == job_id
    assert done[0].params == {"a": [1, 2], "b": "x"}
    queue.shutdown()
