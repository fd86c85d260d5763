-- Token bucket rate limit in one atomic Redis call: the baseline bench/run.sh measures ringlimit
-- against (the usual design of Redis-backed rate limiters).
--
--   EVALSHA <sha> 1 <key> <limit> <duration_ms> [hits] [now_ms]
--
-- The bucket holds up to <limit> tokens and refills continuously at <limit> per <duration_ms>
-- (refill from the elapsed time, no timer). A call takes <hits> tokens (default 1) when that many
-- are there, otherwise it takes none and is over the limit. The time is <now_ms> when given,
-- else the server's clock (redis.call('TIME'); fine under Redis 7's effects replication).
-- State: a hash {t = tokens (fractional), ts = last refill in ms}, expiring once it would be full.
--
-- Returns {status, remaining, reset_after_ms}: status 0 = under the limit, 1 = over.

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local hits = tonumber(ARGV[3] or '1')
local now = tonumber(ARGV[4] or '')
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local rate = limit / duration -- tokens per ms
local state = redis.call('HMGET', key, 't', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = limit
  ts = now
end
if now > ts then
  tokens = math.min(limit, tokens + (now - ts) * rate)
end

local status = 1
if tokens >= hits then
  tokens = tokens - hits
  status = 0
end

redis.call('HSET', key, 't', tostring(tokens), 'ts', tostring(now))
-- Time until the bucket is full again; after it the key carries no information.
local full_in = math.ceil((limit - tokens) / rate)
redis.call('PEXPIRE', key, math.max(full_in, 1))

local reset = 0
if status == 1 then
  reset = math.ceil((hits - tokens) / rate)
end
return {status, math.floor(tokens), reset}
