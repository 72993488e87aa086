-- Pre-built signed webhook deliveries for wrk.
--
-- BENCH_REQUESTS: a file of `key<TAB>signature<TAB>body` lines (bench/payloads.py writes it);
-- each wrk thread takes every BENCH_THREADS-th line, so no delivery is sent twice unless the
-- file runs out (then it starts over and `wrapped` says so). BENCH_WRK_OUT receives a JSON
-- summary: requests completed, requests issued, errors and latency percentiles (microseconds).
-- With BENCH_ONCE=1 a thread that has sent all its lines stops and leaves a marker file
-- (BENCH_DONE_FILE.<thread>), so a fixed number of deliveries can be sent.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("BENCH_REQUESTS")
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  requests = {}
  issued = 0
  wrapped = 0
  local index = 0
  for line in io.lines(path) do
    if index % nthreads == tid then
      local key, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Webhook-Event"] = "whatsapp.message.received",
        ["X-Webhook-Payload-Version"] = "v2",
        ["X-Webhook-Signature"] = signature,
        ["X-Idempotency-Key"] = key,
      }, body)
    end
    index = index + 1
  end
  total = #requests
end

local once = os.getenv("BENCH_ONCE") == "1"

function request()
  issued = issued + 1
  if issued > total then
    wrapped = 1
    if once then
      -- Every delivery went out: say so, and stop this thread (the runner stops wrk).
      if issued == total + 1 then
        local marker = io.open(os.getenv("BENCH_DONE_FILE") .. "." .. tid, "w")
        if marker then marker:close() end
      end
      wrk.thread:stop()
    end
  end
  return requests[((issued - 1) % total) + 1]
end

function done(summary, latency, requests_)
  local issued_all, wrapped_any, available = 0, 0, 0
  for _, thread in ipairs(threads) do
    issued_all = issued_all + thread:get("issued")
    wrapped_any = math.max(wrapped_any, thread:get("wrapped"))
    available = available + thread:get("total")
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_WRK_OUT"), "w"))
  out:write(string.format(
    '{"completed":%d,"issued":%d,"available":%d,"wrapped":%s,"duration_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}',
    summary.requests, issued_all, available, wrapped_any == 1 and "true" or "false",
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
  out:close()
end
