-- fleet.lua: appended to hotparams.lua at load time (one library, one chunk;
-- it uses that file's helpers).  Live handles report which version they
-- run; operators read the reports.
--
-- Keys of a namespace's fleet
--   hp:{ns}:workers       sorted set  worker id -> expiry (ms since epoch)
--   hp:{ns}:workers:info  hash        worker id -> its last report (JSON)

-- Bounds (hotparams/fleet.py holds the same numbers for the client)
local MAX_REPORT_BYTES = 4096
local MAX_WORKER_ID = 256
local MAX_REPORTS = 50000        -- live reports per namespace
local MAX_TTL_MS = 3600000       -- a report lives at most an hour unless renewed
local MAX_WORKERS_PAGE = 1000    -- reports per hp_workers page
local MAX_EXPOSE_PAIRS = 256
local MAX_EXPOSE_INCREMENT = 1000000000
local MAX_COUNTERS = 10000       -- exposure counters per namespace
local MAX_COUNTER = MAX_SAFE_INT - 1

-- A decimal count 0..max as sent (no sign, exponent, fraction or space), or nil.
local function parse_count(s, max)
  if type(s) ~= 'string' or #s > 16 or not s:match('^%d+$') then return nil end
  local n = tonumber(s)
  if n > max then return nil end
  return n
end

local function check_worker_id(id)
  if type(id) ~= 'string' or #id == 0 or #id > MAX_WORKER_ID or not valid_utf8(id)
      or id:find('%c') then
    return redis.error_reply('HP_BADARG worker id must be 1-256 bytes of UTF-8 text '
      .. 'without control characters')
  end
  return nil
end

-- Drop reports whose expiry has passed (bounded work per call).
local function expire_workers(ns, now)
  local zkey, hkey = key_of(ns, 'workers'), key_of(ns, 'workers:info')
  local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. now, 'LIMIT', 0, 100)
  if #dead > 0 then
    redis.call('ZREM', zkey, unpack(dead))
    redis.call('HDEL', hkey, unpack(dead))
  end
end

local function check_fleet_acl(ns)
  local zkey, hkey = key_of(ns, 'workers'), key_of(ns, 'workers:info')
  return check_acl({
    { 'ZADD', zkey, '1', 'x' }, { 'ZREM', zkey, 'x' },
    { 'HSET', hkey, 'x', 'v' }, { 'HDEL', hkey, 'x' },
  })
end

--[[ hp_report (a Live handle's heartbeat)
KEYS[1] namespace
ARGV[1] worker id (host:pid:name), 1-256 bytes of UTF-8 without control characters
ARGV[2] the report: a JSON object of at most 4 KiB ("reported_ms" is set here,
        from Redis's clock; "user" is the ACL user the client says it is)
ARGV[3] time to live in milliseconds (1 to 3600000): the report vanishes unless renewed
Returns Redis's time in ms.  A new id is refused (HP_LIMIT) while the
namespace holds 50,000 live reports.
]]
local function hp_report(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  if #argv ~= 3 then
    return redis.error_reply('HP_BADARG usage: hp_report 1 <ns> <worker id> <report> <ttl ms>')
  end
  local id, report = argv[1], argv[2]
  err = check_worker_id(id)
  if err then return err end
  local ttl = parse_count(argv[3], MAX_TTL_MS)
  if not ttl or ttl < 1 then
    return redis.error_reply('HP_BADARG ttl must be 1 to 3600000 ms')
  end
  if #report > MAX_REPORT_BYTES or not report:match('^%s*{') or not valid_utf8(report)
      or not is_strict_json(report) then
    return redis.error_reply('HP_BADARG report must be a JSON object of at most 4 KiB of UTF-8')
  end
  local now = now_ms()
  local zkey = key_of(ns, 'workers')
  local expiry = tonumber(redis.call('ZSCORE', zkey, id))
  if (not expiry or expiry < now)
      and redis.call('ZCOUNT', zkey, now, '+inf') >= MAX_REPORTS then
    return redis.error_reply('HP_LIMIT the namespace already holds 50000 live worker reports')
  end
  err = check_fleet_acl(ns)
  if err then return err end
  local stamped = report:gsub('^%s*{', '{"reported_ms":' .. now .. ',', 1)
  if report:match('^%s*{%s*}%s*$') then stamped = '{"reported_ms":' .. now .. '}' end
  expire_workers(ns, now)
  redis.call('ZADD', zkey, now + ttl, id)
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
  if #argv ~= 1 then
    return redis.error_reply('HP_BADARG usage: hp_leave 1 <ns> <worker id>')
  end
  err = check_worker_id(argv[1])
  if err then return err end
  err = check_fleet_acl(ns)
  if err then return err end
  redis.call('HDEL', key_of(ns, 'workers:info'), argv[1])
  return redis.call('ZREM', key_of(ns, 'workers'), argv[1])
end

--[[ hp_workers (read-only)
KEYS[1] namespace
ARGV[1] a cursor: "0" to start, then the one the previous page returned
ARGV[2] how many reports to look at (1 to 1000; a hint, as for ZSCAN)
Returns {now ms, next cursor ("0": done), id, report JSON, id, report JSON, ...}
of the live workers of one page; every report live during the whole walk is
returned at least once (a caller drops repeats by id).
Without ARGV (calling convention 1): {now ms, id, report, ...} of every live
worker at once (work grows with the fleet: clients of convention 2 page).
]]
local function live_reports(ns, now, members, out)
  local hkey = key_of(ns, 'workers:info')
  for i = 1, #members, 2 do
    if tonumber(members[i + 1]) >= now then
      local report = redis.call('HGET', hkey, members[i])
      if report then
        out[#out + 1] = members[i]
        out[#out + 1] = report
      end
    end
  end
  return out
end

local function hp_workers(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local now = now_ms()
  local zkey = key_of(ns, 'workers')
  if #argv == 0 then
    local all = redis.call('ZRANGEBYSCORE', zkey, now, '+inf', 'WITHSCORES')
    return live_reports(ns, now, all, { now })
  end
  local cursor, count = argv[1], parse_count(argv[2], MAX_WORKERS_PAGE)
  if #argv ~= 2 or #cursor > 20 or not cursor:match('^%d+$') or not count or count < 1 then
    return redis.error_reply('HP_BADARG usage: hp_workers 1 <ns> <cursor> <count 1-1000>')
  end
  local page = redis.call('ZSCAN', zkey, cursor, 'COUNT', count)
  return live_reports(ns, now, page[2], { now, page[1] })
end

redis.register_function('hp_report', hp_report)
redis.register_function('hp_leave', hp_leave)
redis.register_function { function_name = 'hp_workers', callback = hp_workers,
  flags = { 'no-writes' } }

--[[ hp_expose (exposure counts of A/B variants, batched by each worker)
KEYS[1] namespace
ARGV[1] the variants' salt, 1-64 bytes (counts of an earlier experiment stay apart)
ARGV[2..] variant name ("" for the base), count pairs: at most 256 pairs,
          each count a decimal integer 0 to 1000000000
Keys: hp:{ns}:exposures  hash  "<salt>:<variant>" -> assignments counted
Returns the number of counters touched.  HP_LIMIT: a counter would pass
2^53 - 1, or the namespace would hold more than 10,000 counters.
]]
local function hp_expose(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local salt = argv[1]
  if not salt or #salt == 0 or #salt > 64 or not valid_utf8(salt) or salt:find('%c')
      or (#argv - 1) % 2 ~= 0 or (#argv - 1) / 2 > MAX_EXPOSE_PAIRS then
    return redis.error_reply('HP_BADARG usage: hp_expose 1 <ns> <salt> <variant> <count> ... '
      .. '(at most 256 pairs)')
  end
  local adds, order = {}, {}
  for i = 2, #argv, 2 do
    local name, n = argv[i], parse_count(argv[i + 1], MAX_EXPOSE_INCREMENT)
    if not n then
      return redis.error_reply('HP_BADARG counts must be decimal integers from 0 to 1000000000')
    end
    if name ~= '' and (#name > 64 or not name:match('^[%w][%w_%.%-]*$')) then
      return redis.error_reply('HP_BADARG a variant name is 1-64 characters of letters, '
        .. 'digits, "_", "." or "-" ("" for the base)')
    end
    local field = salt .. ':' .. name
    if not adds[field] then order[#order + 1] = field end
    adds[field] = (adds[field] or 0) + n
  end
  local key = key_of(ns, 'exposures')
  local fresh = 0
  for _, field in ipairs(order) do
    local current = redis.call('HGET', key, field)
    if not current then fresh = fresh + 1 end
    if (tonumber(current) or 0) + adds[field] > MAX_COUNTER then
      return redis.error_reply('HP_LIMIT exposure counter ' .. field .. ' would pass 2^53 - 1')
    end
  end
  if fresh > 0 and redis.call('HLEN', key) + fresh > MAX_COUNTERS then
    return redis.error_reply('HP_LIMIT the namespace already holds 10000 exposure counters')
  end
  err = check_acl({ { 'HINCRBY', key, 'x', '1' } })
  if err then return err end
  for _, field in ipairs(order) do
    redis.call('HINCRBY', key, field, adds[field])
  end
  return #order
end

redis.register_function('hp_expose', hp_expose)
