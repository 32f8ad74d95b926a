-- Shared by every scenario: count responses by status per thread, report JSON in done().
local threads = {}

-- BENCH_RATE: requests per second for the whole run, paced with wrk's delay(). Each of the
-- BENCH_WRK_THREADS threads spaces its own requests evenly (its share of the rate) and never
-- bursts to catch up, so the run makes at most that many, fewer when its connections cannot keep
-- up. Unset: every connection sends its next request as soon as the last one is answered.
local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate then
   local ffi = require("ffi")
   ffi.cdef[[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clock, bench_timespec *now);
   ]]
   local now = ffi.new("bench_timespec")
   local wrk_threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "")
   assert(wrk_threads, "BENCH_RATE needs BENCH_WRK_THREADS (wrk's -t)")
   local interval_ms = 1000 * wrk_threads / rate
   local next_ms

   local function monotonic_ms()
      ffi.C.clock_gettime(1, now) -- CLOCK_MONOTONIC
      return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
   end

   function delay()
      local at = monotonic_ms()
      next_ms = math.max((next_ms or at) + interval_ms, at)
      return next_ms - at
   end
end

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
