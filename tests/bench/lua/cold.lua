-- GET the catalogue with a parameter that changes every request, so every read misses the cache.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["X-Forwarded-Proto"] = "https"

request = function()
   counter = counter + 1
   return wrk.format("GET", wrk.path .. "&nocache=" .. id .. "-" .. counter)
end
