-- Shared by every scenario: count responses by status per thread, report JSON in done().
local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   counter = 0
   math.randomseed(os.time() * 1000 + id)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses")
      for status, n in pairs(counts) do
         merged[status] = (merged[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(merged) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "socket_errors": %d, "statuses": {%s}}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      table.concat(parts, ", ")))
end
