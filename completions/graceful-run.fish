complete -c graceful-run -s l -l listen -d 'Open a listening socket and pass it to the command (repeatable; fds 3, 4, ... in order)' -r
complete -c graceful-run -l compat -d 'Also describe the sockets in another tool\'s environment variables (repeatable)' -r -f -a "server-starter\t'Server::Starter\'s SERVER_STARTER_PORT and SERVER_STARTER_GENERATION'
einhorn\t'einhorn\'s EINHORN_FD_COUNT, EINHORN_FD_<i> and EINHORN_FDS'"
complete -c graceful-run -l map-signal -d 'Translate a signal passed to the command (repeatable); `FROM:` drops it' -r -f -a "TERM:QUIT\t''
TERM:WINCH\t''
TERM:INT\t''
INT:TERM\t''
INT:QUIT\t''
QUIT:TERM\t''
HUP:USR2\t''
USR2:HUP\t''
WINCH:\t''
URG:\t''"
complete -c graceful-run -l stop-signal -d 'The signal the command receives when graceful-run is asked to stop [default: the signal received, after --map-signal]' -r -f -a "HUP\t''
INT\t''
QUIT\t''
ILL\t''
TRAP\t''
ABRT\t''
BUS\t''
FPE\t''
USR1\t''
SEGV\t''
USR2\t''
PIPE\t''
ALRM\t''
TERM\t''
STKFLT\t''
CHLD\t''
CONT\t''
TSTP\t''
TTIN\t''
TTOU\t''
URG\t''
XCPU\t''
XFSZ\t''
VTALRM\t''
PROF\t''
WINCH\t''
IO\t''
PWR\t''
SYS\t''"
complete -c graceful-run -l stop-timeout -d 'How long a stopping command may take before it is killed with SIGKILL' -r -f
complete -c graceful-run -l drain-delay -d 'Keep serving this long after a stop request, before the stop signal' -r -f
complete -c graceful-run -l pre-stop -d 'Run CMD with `sh -c` at a stop request, after the drain delay and before the stop signal' -r -f -a "(__fish_complete_command)"
complete -c graceful-run -l post-stop -d 'Run CMD with `sh -c` after the command has exited, before graceful-run exits' -r -f -a "(__fish_complete_command)"
complete -c graceful-run -l hook-timeout -d 'Longest time a --pre-stop or --post-stop hook may run before it is killed' -r -f
complete -c graceful-run -l restart-signal -d 'The signal that starts a zero-downtime restart, or `none`' -r -f -a "none\t''
HUP\t''
QUIT\t''
ILL\t''
TRAP\t''
ABRT\t''
BUS\t''
FPE\t''
USR1\t''
SEGV\t''
USR2\t''
PIPE\t''
ALRM\t''
STKFLT\t''
CONT\t''
TSTP\t''
TTIN\t''
TTOU\t''
URG\t''
XCPU\t''
XFSZ\t''
VTALRM\t''
PROF\t''
WINCH\t''
IO\t''
PWR\t''
SYS\t''"
complete -c graceful-run -l ready -d 'When a new generation counts as ready (and the old one is stopped): `auto`, `accepting`, `notify` or a DURATION' -r -f -a "auto\t''
accepting\t''
notify\t''"
complete -c graceful-run -l ready-timeout -d 'How long a new generation may take to become ready before it is stopped' -r -f
complete -c graceful-run -l restart-policy -d 'Restart the command when it exits on its own' -r -f -a "never\t'Exit with the command\'s status'
on-failure\t'Restart after a non-zero exit or a death by signal'
always\t'Restart after any exit'"
complete -c graceful-run -l restart-delay -d 'First delay before a crash restart; it doubles after each quick failure, up to 30s' -r -f
complete -c graceful-run -l max-restarts -d 'Give up after N crash restarts in a row and exit with the command\'s status' -r -f
complete -c graceful-run -l user -d 'Run the command as USER, and GROUP if given (names or numbers)' -r -f -a "(__fish_complete_users)"
complete -c graceful-run -l pid-file -d 'Write graceful-run\'s own pid to PATH, so scripts can `kill -HUP "$(cat PATH)"`' -r -F
complete -c graceful-run -l exit-code-map -d 'Exit with TO when the command\'s status is FROM (repeatable)' -r -f
complete -c graceful-run -l log-format -d 'Format of graceful-run\'s own log lines on stderr (the command\'s output is untouched)' -r -f -a "text\t'`graceful-run: gen 2 (pid 4242): message`'
json\t'One JSON object per line'"
complete -c graceful-run -l no-listen-pid -d 'Leave LISTEN_PID out of the command\'s environment'
complete -c graceful-run -l no-process-group -d 'Keep the command in graceful-run\'s process group and signal it alone'
complete -c graceful-run -l no-subreaper -d 'Do not become a child subreaper'
complete -c graceful-run -s q -l quiet -d 'Log only warnings and errors'
complete -c graceful-run -s v -l verbose -d 'Also log details: reaped orphans, notify messages, each forwarded signal'
complete -c graceful-run -s h -l help -d 'Print help (see more with \'--help\')'
complete -c graceful-run -s V -l version -d 'Print version'
# Added by tests/generated_files.rs: COMMAND and its arguments, as for sudo and env.
complete -c graceful-run -x -a '(__fish_complete_subcommand -l --listen --compat --map-signal --stop-signal --stop-timeout --drain-delay --pre-stop --post-stop --hook-timeout --restart-signal --ready --ready-timeout --restart-policy --restart-delay --max-restarts --user --pid-file --exit-code-map --log-format)'
