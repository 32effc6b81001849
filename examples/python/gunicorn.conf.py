# gunicorn settings for graceful-run: `gunicorn -c gunicorn.conf.py app:wsgi`.
# No `bind`: gunicorn takes the sockets from LISTEN_FDS and sends READY=1 itself.
workers = 2
# TERM is gunicorn's graceful stop: workers finish their requests within this time.
graceful_timeout = 20
# gunicorn 25.1+ opens a control socket at a fixed path ($XDG_RUNTIME_DIR or ~/.gunicorn);
# two generations running side by side during a restart would contend for it.
control_socket_disable = True
