-- GET the path given on the command line, through the proxy header the production profile trusts.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["X-Forwarded-Proto"] = "https"
