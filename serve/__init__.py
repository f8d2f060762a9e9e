"""Ray Serve application (arrives with the serving issue). Importing it starts nothing."""
