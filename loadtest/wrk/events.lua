-- wrk script for `make bench`: POST /v1/events spread over many customers.
--
--   wrk -t2 -c64 -d30s -s loadtest/wrk/events.lua http://127.0.0.1:PORT -- \
--       CUSTOMERS_FILE RUN_ID [BATCH_SIZE]
--
-- CUSTOMERS_FILE: one "customer_id api_key" per line. Every request carries a
-- fresh idempotency key (RUN_ID-thread-counter[-item]) so nothing is a replay.
-- BATCH_SIZE > 0 posts POST /v1/events/batch with that many events instead.
-- Counts responses per status (and accepted batch items) and prints one line
-- "WRK_RESULT {json}" that loadtest/bench.py parses.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

local customers = {}
local counter = 0
local run_id = "run"
local batch_size = 0
local stamp_second = -1
local stamp = ""
statuses = {}
items_accepted = 0

function init(args)
  local path = args[1]
  run_id = args[2] or run_id
  batch_size = tonumber(args[3] or "0") or 0
  for line in io.lines(path) do
    local cid, key = line:match("^(%S+)%s+(%S+)")
    if cid then
      customers[#customers + 1] = { cid, key }
    end
  end
  if #customers == 0 then
    error("no customers in " .. path)
  end
end

local function timestamp()
  local now = os.time()
  if now ~= stamp_second then
    stamp_second = now
    stamp = os.date("!%Y-%m-%dT%H:%M:%SZ", now)
  end
  return stamp
end

local amounts = { "0.01", "0.25", "1.00", "2.50" }

local function event(customer, key)
  return '{"idempotent_key":"' .. key .. '","customer_id":"' .. customer[1] ..
    '","entitlement_id":"api_calls","amount":"' .. amounts[(counter % #amounts) + 1] ..
    '","currency":"USD","usage_description":"bench","timestamp":"' .. timestamp() .. '"}'
end

function request()
  counter = counter + 1
  -- Threads start at different offsets so they do not walk the customers in step.
  local customer = customers[((counter * 31 + thread_id * 997) % #customers) + 1]
  local key = run_id .. "-" .. thread_id .. "-" .. counter
  local headers = {
    ["Authorization"] = "Bearer " .. customer[2],
    ["Content-Type"] = "application/json",
  }
  if batch_size > 0 then
    local parts = {}
    for i = 1, batch_size do
      parts[i] = event(customer, key .. "-" .. i)
    end
    return wrk.format("POST", "/v1/events/batch", headers,
      '{"events":[' .. table.concat(parts, ",") .. "]}")
  end
  return wrk.format("POST", "/v1/events", headers, event(customer, key))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if batch_size > 0 and status == 200 and body then
    local _, accepted = body:gsub('"status":%s*202', "")
    items_accepted = items_accepted + accepted
  end
end

function done(summary, latency, requests)
  local total = {}
  local items = 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      total[status] = (total[status] or 0) + count
    end
    items = items + (thread:get("items_accepted") or 0)
  end
  local parts = {}
  for status, count in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f},' ..
    '"statuses":{%s},"items_accepted":%d}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    table.concat(parts, ","), items))
end
