"""One module per training stage; each `main(config)` reads like TRL's scripts."""
