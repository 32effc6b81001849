# puma settings for graceful-run: serve exactly the sockets in LISTEN_FDS (no `bind` here).
bind_to_activated_sockets 'only'
threads 4, 8
# On TERM puma stops accepting and finishes the requests in flight; then exit 0 rather than
# re-raise SIGTERM (which would make the exit status "killed by SIGTERM").
raise_exception_on_sigterm false
