# Added by tests/generated_files.rs: graceful-run's options only before COMMAND.
function __graceful_run_no_command
    set -l tokens (commandline -opc)
    set -e tokens[1]
    while set -q tokens[1]
        switch $tokens[1]
            case --
                return 1
            case -l --listen --compat --map-signal --stop-signal --stop-timeout --kill-mode --drain-delay --pre-stop --post-stop --hook-timeout --restart-signal --ready --ready-timeout --handover --drain-timeout --restart-policy --restart-delay --max-restarts -w --workers --max-surge --max-unavailable --health-cmd --health-http --health-interval --health-timeout --health-retries --health-start-period --watchdog --max-memory --max-lifetime --watch --build --user --pid-file --exit-code-map --log-format
                set -e tokens[1]
            case '-*'
            case '*'
                return 1
        end
        set -e tokens[1]
    end
    return 0
end
complete -c graceful-run -n __graceful_run_no_command -s l -l listen -d 'Open a listening socket and pass it to the command (repeatable; fds 3, 4, ... in order)' -r
complete -c graceful-run -n __graceful_run_no_command -l compat -d 'Also describe the sockets in another tool\'s environment variables (repeatable)' -r -f -a "server-starter\t'Server::Starter\'s SERVER_STARTER_PORT and SERVER_STARTER_GENERATION'
einhorn\t'einhorn\'s EINHORN_FD_COUNT, EINHORN_FD_<i> and EINHORN_FDS'"
complete -c graceful-run -n __graceful_run_no_command -l map-signal -d 'Translate a signal passed to the command (repeatable); `FROM:` drops it' -r -f -a "TERM:QUIT\t''
TERM:WINCH\t''
TERM:INT\t''
INT:TERM\t''
INT:QUIT\t''
QUIT:TERM\t''
HUP:USR2\t''
USR2:HUP\t''
WINCH:\t''
URG:\t''"
complete -c graceful-run -n __graceful_run_no_command -l stop-signal -d 'The signal the command receives when graceful-run is asked to stop [default: the signal received, after --map-signal]' -r -f -a "HUP\t''
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
SYS\t''
RTMIN\t''
RTMIN+1\t''
RTMIN+2\t''
RTMIN+3\t''
RTMIN+4\t''
RTMIN+5\t''
RTMIN+6\t''
RTMIN+7\t''
RTMIN+8\t''
RTMIN+9\t''
RTMIN+10\t''
RTMIN+11\t''
RTMIN+12\t''
RTMIN+13\t''
RTMIN+14\t''
RTMIN+15\t''
RTMAX-14\t''
RTMAX-13\t''
RTMAX-12\t''
RTMAX-11\t''
RTMAX-10\t''
RTMAX-9\t''
RTMAX-8\t''
RTMAX-7\t''
RTMAX-6\t''
RTMAX-5\t''
RTMAX-4\t''
RTMAX-3\t''
RTMAX-2\t''
RTMAX-1\t''
RTMAX\t''"
complete -c graceful-run -n __graceful_run_no_command -l stop-timeout -d 'How long a stopping command may take before it is killed with SIGKILL' -r -f
complete -c graceful-run -n __graceful_run_no_command -l kill-mode -d 'Who receives forwarded signals and the stop signal: `mixed` or `group`' -r -f -a "mixed\t'Signals to the main process; SIGKILL to the whole process group'
group\t'Every signal to the whole process group'"
complete -c graceful-run -n __graceful_run_no_command -l drain-delay -d 'Keep serving this long after a stop request, before the stop signal' -r -f
complete -c graceful-run -n __graceful_run_no_command -l pre-stop -d 'Run CMD with `sh -c` at a stop request, after the drain delay and before the stop signal' -r -f -a "(__fish_complete_command)"
complete -c graceful-run -n __graceful_run_no_command -l post-stop -d 'Run CMD with `sh -c` after the command has exited, before graceful-run exits' -r -f -a "(__fish_complete_command)"
complete -c graceful-run -n __graceful_run_no_command -l hook-timeout -d 'Longest time a --pre-stop or --post-stop hook may run before it is killed' -r -f
complete -c graceful-run -n __graceful_run_no_command -l restart-signal -d 'The signal that starts a zero-downtime restart, or `none`' -r -f -a "none\t''
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
SYS\t''
RTMIN\t''
RTMIN+1\t''
RTMIN+2\t''
RTMIN+3\t''
RTMIN+4\t''
RTMIN+5\t''
RTMIN+6\t''
RTMIN+7\t''
RTMIN+8\t''
RTMIN+9\t''
RTMIN+10\t''
RTMIN+11\t''
RTMIN+12\t''
RTMIN+13\t''
RTMIN+14\t''
RTMIN+15\t''
RTMAX-14\t''
RTMAX-13\t''
RTMAX-12\t''
RTMAX-11\t''
RTMAX-10\t''
RTMAX-9\t''
RTMAX-8\t''
RTMAX-7\t''
RTMAX-6\t''
RTMAX-5\t''
RTMAX-4\t''
RTMAX-3\t''
RTMAX-2\t''
RTMAX-1\t''
RTMAX\t''"
complete -c graceful-run -n __graceful_run_no_command -l ready -d 'When a new generation counts as ready (and the old one is stopped): `auto`, `accepting`, `notify` or a DURATION' -r -f -a "auto\t''
accepting\t''
notify\t''"
complete -c graceful-run -n __graceful_run_no_command -l ready-timeout -d 'How long a new generation may take to become ready before it is stopped' -r -f
complete -c graceful-run -n __graceful_run_no_command -l handover -d 'How a restart hands TCP connections from one generation to the next: `steer` or `shared`' -r -f -a "steer\t'A listener per generation; new connections steered to the ready one, the old one drained'
shared\t'One socket shared by every generation; the old one is signalled once the new one is ready'"
complete -c graceful-run -n __graceful_run_no_command -l drain-timeout -d 'Longest wait for an old generation to finish its requests before its stop signal' -r -f
complete -c graceful-run -n __graceful_run_no_command -l restart-policy -d 'Restart the command when it exits on its own' -r -f -a "never\t'Exit with the command\'s status'
on-failure\t'Restart after a non-zero exit or a death by signal'
always\t'Restart after any exit'"
complete -c graceful-run -n __graceful_run_no_command -l restart-delay -d 'First delay before a crash restart; it doubles after each quick failure, up to 30s' -r -f
complete -c graceful-run -n __graceful_run_no_command -l max-restarts -d 'Give up after N crash restarts in a row and exit with the command\'s status' -r -f
complete -c graceful-run -n __graceful_run_no_command -s w -l workers -d 'How many copies of the command serve side by side, or `auto` for one per usable CPU [default: 1]' -r -f -a "auto\t''"
complete -c graceful-run -n __graceful_run_no_command -l max-surge -d 'During a rolling restart, how many workers may run beyond --workers [default: 1]' -r -f
complete -c graceful-run -n __graceful_run_no_command -l max-unavailable -d 'During a rolling restart, how many workers may be missing from --workers [default: 0]' -r -f
complete -c graceful-run -n __graceful_run_no_command -l health-cmd -d 'Check the serving generation\'s health by running CMD with `sh -c`: exit status 0 is healthy' -r -f -a "(__fish_complete_command)"
complete -c graceful-run -n __graceful_run_no_command -l health-http -d 'Check the serving generation\'s health with an HTTP `GET PATH` on the first stream --listen socket: 2xx and 3xx are healthy' -r -f
complete -c graceful-run -n __graceful_run_no_command -l health-interval -d 'Time between two health checks [default: 30s, as Docker\'s]' -r -f
complete -c graceful-run -n __graceful_run_no_command -l health-timeout -d 'Longest time one health check may take; a check still running then has failed (and a --health-cmd is killed) [default: 30s]' -r -f
complete -c graceful-run -n __graceful_run_no_command -l health-retries -d 'Failed health checks in a row that make a generation unhealthy (at least 1) [default: 3]' -r -f
complete -c graceful-run -n __graceful_run_no_command -l health-start-period -d 'Time after a generation is ready during which failed health checks do not count [default: 0s]' -r -f
complete -c graceful-run -n __graceful_run_no_command -l watchdog -d 'Replace a generation that sends no `WATCHDOG=1` for longer than DURATION, as systemd\'s WatchdogSec' -r -f
complete -c graceful-run -n __graceful_run_no_command -l max-memory -d 'Replace a generation whose memory grows past SIZE, e.g. `512M` or `1.5G`' -r -f
complete -c graceful-run -n __graceful_run_no_command -l max-lifetime -d 'Replace each generation after it has served for about DURATION (at least 1s)' -r -f
complete -c graceful-run -n __graceful_run_no_command -l watch -d 'Development mode: replace the generation when a file under PATH changes (repeatable)' -r -F
complete -c graceful-run -n __graceful_run_no_command -l build -d 'With --watch: run CMD with `sh -c` after each burst of changes, and replace the generation only if it exits 0' -r -f -a "(__fish_complete_command)"
complete -c graceful-run -n __graceful_run_no_command -l user -d 'Run the command as USER, and GROUP if given (names or numbers)' -r -f -a "(__fish_complete_users)"
complete -c graceful-run -n __graceful_run_no_command -l pid-file -d 'Write graceful-run\'s own pid to PATH, so scripts can `kill -HUP "$(cat PATH)"`' -r -F
complete -c graceful-run -n __graceful_run_no_command -l exit-code-map -d 'Exit with TO when the command\'s status is FROM (repeatable)' -r -f
complete -c graceful-run -n __graceful_run_no_command -l log-format -d 'Format of graceful-run\'s own log lines on stderr (the command\'s output is untouched)' -r -f -a "text\t'`graceful-run: gen 2 (pid 4242): message`'
json\t'One JSON object per line'"
complete -c graceful-run -n __graceful_run_no_command -l no-listen-pid -d 'Leave LISTEN_PID out of the command\'s environment'
complete -c graceful-run -n __graceful_run_no_command -l no-process-group -d 'Keep the command in graceful-run\'s process group and signal it alone'
complete -c graceful-run -n __graceful_run_no_command -l no-subreaper -d 'Do not become a child subreaper'
complete -c graceful-run -n __graceful_run_no_command -s q -l quiet -d 'Log only warnings and errors'
complete -c graceful-run -n __graceful_run_no_command -s v -l verbose -d 'Also log details: reaped orphans, notify messages, each forwarded signal'
complete -c graceful-run -n __graceful_run_no_command -s h -l help -d 'Print help (see more with \'--help\')'
complete -c graceful-run -n __graceful_run_no_command -s V -l version -d 'Print version'
# Added by tests/generated_files.rs: COMMAND and its arguments, as for sudo and env.
complete -c graceful-run -x -a '(__fish_complete_subcommand -l --listen --compat --map-signal --stop-signal --stop-timeout --kill-mode --drain-delay --pre-stop --post-stop --hook-timeout --restart-signal --ready --ready-timeout --handover --drain-timeout --restart-policy --restart-delay --max-restarts -w --workers --max-surge --max-unavailable --health-cmd --health-http --health-interval --health-timeout --health-retries --health-start-period --watchdog --max-memory --max-lifetime --watch --build --user --pid-file --exit-code-map --log-format)'
