# A Rack app for puma under graceful-run. puma takes the listening socket from LISTEN_FDS
# itself; puma.rb makes TERM a graceful stop that exits 0.
#
#   graceful-run -l 8080 --ready auto -- puma -C puma.rb config.ru
app = lambda do |env|
  pid = Process.pid.to_s
  if env['PATH_INFO'] == '/slow'
    ms = (env['QUERY_STRING'][/(?:^|&)ms=(\d+)/, 1] || '1000').to_i
    sleep(ms / 1000.0)
    body = "slow response from pid #{pid} after #{ms} ms\n"
  else
    body = "hello from pid #{pid}\n"
  end
  [200, { 'Content-Length' => body.bytesize.to_s, 'X-Pid' => pid }, [body]]
end
run app
