"""greenq against its peers on the shared workloads; see bench/peers/README.md."""
