"""Jobs: train, evaluate and index. Each is a linear script with a ``main(argv)``."""
