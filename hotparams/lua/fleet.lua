-- fleet.lua: appended to hotparams.lua at load time (one library, one chunk;
-- it uses that file's helpers).  Live handles report which version they
-- run; operators read the reports.
--
-- Keys of a namespace's fleet
--   hp:{ns}:workers       sorted set  worker id -> expiry (ms since epoch)
--   hp:{ns}:workers:info  hash        worker id -> its last report (JSON)

local MAX_REPORT_BYTES = 8192

-- Drop reports whose expiry has passed (bounded work per call).
local function expire_workers(ns, now)
  local zkey, hkey = key_of(ns, 'workers'), key_of(ns, 'workers:info')
  local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. now, 'LIMIT', 0, 100)
  if #dead > 0 then
    redis.call('ZREM', zkey, unpack(dead))
    redis.call('HDEL', hkey, unpack(dead))
  end
end

--[[ hp_report (a Live handle's heartbeat)
KEYS[1] namespace
ARGV[1] worker id (host:pid:name)
ARGV[2] the report (a JSON object; "reported_ms" is set here, from Redis's clock)
ARGV[3] time to live in milliseconds: the report vanishes unless renewed
Returns Redis's time in ms
]]
local function hp_report(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local id, report, ttl = argv[1], argv[2], tonumber(argv[3] or '')
  if not id or #id == 0 or #id > 256 then
    return redis.error_reply('HP_BADARG worker id must be 1-256 bytes')
  end
  if not ttl or ttl < 1 or ttl > 86400000 then
    return redis.error_reply('HP_BADARG ttl must be 1 to 86400000 ms')
  end
  if not report or #report > MAX_REPORT_BYTES or not is_strict_json(report)
      or not report:match('^%s*{') then
    return redis.error_reply('HP_BADARG report must be a JSON object of at most 8 KiB')
  end
  local now = now_ms()
  local stamped = report:gsub('^%s*{', '{"reported_ms":' .. now .. ',', 1)
  if report:match('^%s*{%s*}%s*$') then stamped = '{"reported_ms":' .. now .. '}' end
  expire_workers(ns, now)
  redis.call('ZADD', key_of(ns, 'workers'), now + ttl, id)
  redis.call('HSET', key_of(ns, 'workers:info'), id, stamped)
  return now
end

--[[ hp_leave (a Live handle that closes cleanly)
KEYS[1] namespace
ARGV[1] worker id
Returns 1 if the worker was listed, else 0
]]
local function hp_leave(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  redis.call('HDEL', key_of(ns, 'workers:info'), argv[1] or '')
  return redis.call('ZREM', key_of(ns, 'workers'), argv[1] or '')
end

--[[ hp_workers (read-only)
KEYS[1] namespace
Returns {now ms, id, report JSON, id, report JSON, ...} of the live workers
]]
local function hp_workers(keys)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local now = now_ms()
  local ids = redis.call('ZRANGEBYSCORE', key_of(ns, 'workers'), now, '+inf')
  local out = { now }
  if #ids == 0 then return out end
  local reports = redis.call('HMGET', key_of(ns, 'workers:info'), unpack(ids))
  for i, id in ipairs(ids) do
    if reports[i] then
      out[#out + 1] = id
      out[#out + 1] = reports[i]
    end
  end
  return out
end

redis.register_function('hp_report', hp_report)
redis.register_function('hp_leave', hp_leave)
redis.register_function { function_name = 'hp_workers', callback = hp_workers,
  flags = { 'no-writes' } }

--[[ hp_expose (exposure counts of A/B variants, batched by each worker)
KEYS[1] namespace
ARGV[1] the variants' salt (counts of an earlier experiment stay apart)
ARGV[2..] variant name ("" for the base), count pairs
Keys: hp:{ns}:exposures  hash  "<salt>:<variant>" -> assignments counted
Returns the number of counters touched
]]
local function hp_expose(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local salt = argv[1]
  if not salt or #salt == 0 or #salt > 64 or (#argv - 1) % 2 ~= 0 then
    return redis.error_reply('HP_BADARG usage: hp_expose 1 <ns> <salt> <variant> <count> ...')
  end
  for i = 2, #argv, 2 do
    local n = tonumber(argv[i + 1])
    if not n or n < 0 or n ~= math.floor(n) or #argv[i] > 64 then
      return redis.error_reply('HP_BADARG counts must be non-negative integers')
    end
  end
  local key = key_of(ns, 'exposures')
  for i = 2, #argv, 2 do
    redis.call('HINCRBY', key, salt .. ':' .. argv[i], argv[i + 1])
  end
  return (#argv - 1) / 2
end

redis.register_function('hp_expose', hp_expose)
