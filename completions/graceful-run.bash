_graceful__run() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="graceful__run"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        graceful__run)
            opts="-l -w -q -v -h -V --listen --no-listen-pid --compat --map-signal --stop-signal --stop-timeout --no-process-group --kill-mode --drain-delay --pre-stop --post-stop --hook-timeout --restart-signal --ready --ready-timeout --handover --drain-timeout --restart-policy --restart-delay --max-restarts --workers --max-surge --max-unavailable --health-cmd --health-http --health-interval --health-timeout --health-retries --health-start-period --watchdog --max-memory --max-lifetime --watch --build --user --pid-file --no-subreaper --exit-code-map --quiet --verbose --log-format --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --listen)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -l)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --compat)
                    COMPREPLY=($(compgen -W "server-starter einhorn" -- "${cur}"))
                    return 0
                    ;;
                --map-signal)
                    COMPREPLY=($(compgen -W "TERM:QUIT TERM:WINCH TERM:INT INT:TERM INT:QUIT QUIT:TERM HUP:USR2 USR2:HUP WINCH: URG:" -- "${cur}"))
                    return 0
                    ;;
                --stop-signal)
                    COMPREPLY=($(compgen -W "HUP INT QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS RTMIN RTMIN+1 RTMIN+2 RTMIN+3 RTMIN+4 RTMIN+5 RTMIN+6 RTMIN+7 RTMIN+8 RTMIN+9 RTMIN+10 RTMIN+11 RTMIN+12 RTMIN+13 RTMIN+14 RTMIN+15 RTMAX-14 RTMAX-13 RTMAX-12 RTMAX-11 RTMAX-10 RTMAX-9 RTMAX-8 RTMAX-7 RTMAX-6 RTMAX-5 RTMAX-4 RTMAX-3 RTMAX-2 RTMAX-1 RTMAX" -- "${cur}"))
                    return 0
                    ;;
                --stop-timeout)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --kill-mode)
                    COMPREPLY=($(compgen -W "mixed group" -- "${cur}"))
                    return 0
                    ;;
                --drain-delay)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --pre-stop)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --post-stop)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --hook-timeout)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --restart-signal)
                    COMPREPLY=($(compgen -W "none HUP QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM STKFLT CONT TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS RTMIN RTMIN+1 RTMIN+2 RTMIN+3 RTMIN+4 RTMIN+5 RTMIN+6 RTMIN+7 RTMIN+8 RTMIN+9 RTMIN+10 RTMIN+11 RTMIN+12 RTMIN+13 RTMIN+14 RTMIN+15 RTMAX-14 RTMAX-13 RTMAX-12 RTMAX-11 RTMAX-10 RTMAX-9 RTMAX-8 RTMAX-7 RTMAX-6 RTMAX-5 RTMAX-4 RTMAX-3 RTMAX-2 RTMAX-1 RTMAX" -- "${cur}"))
                    return 0
                    ;;
                --ready)
                    COMPREPLY=($(compgen -W "auto accepting notify" -- "${cur}"))
                    return 0
                    ;;
                --ready-timeout)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --handover)
                    COMPREPLY=($(compgen -W "steer shared" -- "${cur}"))
                    return 0
                    ;;
                --drain-timeout)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --restart-policy)
                    COMPREPLY=($(compgen -W "never on-failure always" -- "${cur}"))
                    return 0
                    ;;
                --restart-delay)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --max-restarts)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --workers)
                    COMPREPLY=($(compgen -W "auto" -- "${cur}"))
                    return 0
                    ;;
                -w)
                    COMPREPLY=($(compgen -W "auto" -- "${cur}"))
                    return 0
                    ;;
                --max-surge)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --max-unavailable)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --health-cmd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --health-http)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --health-interval)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --health-timeout)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --health-retries)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --health-start-period)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --watchdog)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --max-memory)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --max-lifetime)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --watch)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --build)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --user)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pid-file)
                    local oldifs
                    if [ -n "${IFS+x}" ]; then
                        oldifs="$IFS"
                    fi
                    IFS=$'\n'
                    COMPREPLY=($(compgen -f "${cur}"))
                    if [ -n "${oldifs+x}" ]; then
                        IFS="$oldifs"
                    fi
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o filenames
                    fi
                    return 0
                    ;;
                --exit-code-map)
                    COMPREPLY=("${cur}")
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o nospace
                    fi
                    return 0
                    ;;
                --log-format)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _graceful__run -o nosort -o bashdefault -o default graceful-run
else
    complete -F _graceful__run -o bashdefault -o default graceful-run
fi

# Added to clap's script by tests/generated_files.rs: complete COMMAND (after `--`, or the
# first word that is neither an option nor an option's value) and then its arguments with
# the command's own completion, as sudo and env do.
_graceful_run_complete() {
    # Which words are glued to the one before (bash splits `TERM:QUIT` and `[::1]:80` at
    # each colon): an option's value spans them.
    local line=$COMP_LINE j glued=()
    for (( j = 0; j < ${#COMP_WORDS[@]}; j++ )); do
        if [[ $line =~ ^[[:space:]] ]]; then glued[j]=0; else glued[j]=1; fi
        line=${line#"${line%%[![:space:]]*}"}
        line=${line#"${COMP_WORDS[j]}"}
    done
    local i=1
    while (( i < COMP_CWORD )); do
        case ${COMP_WORDS[i]} in
            --)
                _graceful_run_command $(( i + 1 ))
                return
                ;;
            -l|--listen|--compat|--map-signal|--stop-signal|--stop-timeout|--kill-mode|--drain-delay|--pre-stop|--post-stop|--hook-timeout|--restart-signal|--ready|--ready-timeout|--handover|--drain-timeout|--restart-policy|--restart-delay|--max-restarts|-w|--workers|--max-surge|--max-unavailable|--health-cmd|--health-http|--health-interval|--health-timeout|--health-retries|--health-start-period|--watchdog|--max-memory|--max-lifetime|--watch|--build|--user|--pid-file|--exit-code-map|--log-format)
                (( i++ ))
                while (( i + 1 < COMP_CWORD && glued[i + 1] )); do (( i++ )); done
                ;;
            -*) ;;
            *)
                _graceful_run_command "$i"
                return
                ;;
        esac
        (( i++ ))
    done
    # A value bash split at its colons (`--map-signal TERM:`): complete the whole value,
    # then offer only the part after the last piece bash kept apart.
    local start=$COMP_CWORD
    while (( start > 2 && glued[start] )); do (( start-- )); done
    if (( start < COMP_CWORD )); then
        local whole="" prefix
        for (( j = start; j <= COMP_CWORD; j++ )); do whole+=${COMP_WORDS[j]}; done
        _graceful__run "$1" "$whole" "${COMP_WORDS[start - 1]}"
        prefix=${whole%"${COMP_WORDS[COMP_CWORD]}"}
        COMPREPLY=( "${COMPREPLY[@]#"$prefix"}" )
        return
    fi
    _graceful__run "$@"
}

# The command line from word $1 on, completed as its own: bash-completion's _command_offset
# when it is loaded, else command names and then file names.
_graceful_run_command() {
    if declare -F _command_offset >/dev/null; then
        _command_offset "$1"
    elif (( COMP_CWORD == $1 )); then
        COMPREPLY=( $(compgen -c -- "${COMP_WORDS[COMP_CWORD]}") )
    else
        COMPREPLY=( $(compgen -f -- "${COMP_WORDS[COMP_CWORD]}") )
    fi
}

complete -F _graceful_run_complete -o bashdefault -o default graceful-run
