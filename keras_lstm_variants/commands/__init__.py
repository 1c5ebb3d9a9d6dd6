"""The command-line tools (cli, compare, study, bench, tasks), apart from the library."""
