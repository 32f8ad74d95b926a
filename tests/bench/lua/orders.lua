-- POST /api/v1/orders with a unique Idempotency-Key per request.
-- BENCH_SKUS: "HOT" for one SKU, or a count N for SKU-00001..SKU-N chosen uniformly.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local skus = os.getenv("BENCH_SKUS")
local key = os.getenv("BENCH_API_KEY")
local run = os.getenv("BENCH_RUN_ID") or tostring(os.time())
local sku_count = tonumber(skus)
local address = '"shipping_address": {"name": "Bench", "line1": "1 Load St", "city": "Lyon", "postal_code": "69001", "country": "FR"}'

request = function()
   counter = counter + 1
   local sku = skus
   if sku_count then
      sku = string.format("SKU-%05d", math.random(1, sku_count))
   end
   local body = string.format('{"lines": [{"sku": "%s", "quantity": 1}], %s}', sku, address)
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. key,
      ["Idempotency-Key"] = string.format("%s-%d-%d", run, id, counter),
      ["X-Forwarded-Proto"] = "https",
   }
   return wrk.format("POST", "/api/v1/orders", headers, body)
end
