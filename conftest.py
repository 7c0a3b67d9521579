pytest_plugins = ["bgagent_testing.pytest_plugin"]
