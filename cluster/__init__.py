"""Small pieces shared by jobs and serving: connecting, runtime env, resources (cluster issue)."""
