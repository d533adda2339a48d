id = "core.not_callable"
perform = "not a function"
