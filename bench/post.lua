-- wrk script: POST the JSON bodies of a file (one per line) in turn; print a JSON summary.
-- Usage: wrk -t1 -c8 -d5s -s bench/post.lua http://127.0.0.1:PORT -- BODIES_FILE /v1/path
local reqs = {}
local n = 0
local i = 0

function init(args)
  local file, path = args[1], args[2]
  for line in io.lines(file) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, line)
    end
  end
  if n == 0 then
    error("no request bodies in " .. file)
  end
end

function request()
  i = i % n + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.2f,"max":%d,"stdev":%.2f,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
