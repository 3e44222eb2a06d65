"""The exit codes of every ``ccbridge`` command, defined once (the CLI and the domain functions it calls share them).

0 success; 1 an expected failure (missing store, unreachable peer, broken chain); 2 a usage or configuration error;
130 interrupted.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
