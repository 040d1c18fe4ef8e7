-- fleet.lua: appended to hotparams.lua at load time (one library, one chunk;
-- it uses that file's helpers).  Live handles report which version they
-- run; operators read the reports.
--
-- Keys of a namespace's fleet
--   hp:{ns}:workers           sorted set  "<acl user>\n<worker id>" -> expiry
--                                         (ms since epoch): the index of live reports
--   hp:{ns}:workers:u:<user>  hash        worker id -> its last report (JSON), one
--                                         key per ACL user, living as long as
--                                         that user's longest report
--
-- A report lives in its ACL user's own key, and functions write with the
-- caller's rights: an ACL that lets a worker user write only its own
-- hp:{ns}:workers:u:<user> (and the index) keeps it from writing or
-- removing any other user's report body.  The index is shared: a member
-- naming another user without a body there is skipped by hp_workers.

-- Bounds (hotparams/fleet.py holds the same numbers for the client)
local MAX_REPORT_BYTES = 4096
local MAX_WORKER_ID = 256
local MAX_ACL_USER = 128
local MAX_REPORTS = 50000        -- live reports per namespace
local MAX_TTL_MS = 3600000       -- a report lives at most an hour unless renewed
local MAX_WORKERS_PAGE = 1000    -- index entries an hp_workers page may look at
local MAX_REPORTS_PAIRS = 256    -- worker reports an hp_reports call may file
local MAX_EXPIRE = 1000          -- dead index entries a report call may drop
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

-- The ACL user a report is filed under (ARGV[4]; "default" when left out).
local function report_user(user)
  user = user or 'default'
  if #user == 0 or #user > MAX_ACL_USER or not valid_utf8(user) or user:find('[%c%s]') then
    return nil, redis.error_reply('HP_BADARG the ACL user must be 1-128 bytes of UTF-8 '
      .. 'without spaces or control characters')
  end
  return user, nil
end

local function body_key(ns, user)
  return key_of(ns, 'workers:u:' .. user)
end

local function member_of(user, id)
  return user .. '\n' .. id
end

local function split_member(member)
  local user, id = member:match('^([^\n]+)\n(.+)$')
  return user, id
end

-- Drop index entries whose expiry has passed (at most `limit` per call:
-- bounded work), and the bodies of the caller's own (another user's dead
-- bodies go with their key's time to live: the caller may not write them).
local function expire_workers(ns, now, user, limit)
  local zkey = key_of(ns, 'workers')
  local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. now, 'LIMIT', 0, limit)
  if #dead == 0 then return end
  redis.call('ZREM', zkey, unpack(dead))
  local mine = {}
  for _, member in ipairs(dead) do
    local owner, id = split_member(member)
    if owner == user then mine[#mine + 1] = id end
  end
  if #mine > 0 then redis.call('HDEL', body_key(ns, user), unpack(mine)) end
end

local function check_fleet_acl(ns, user)
  local zkey, bkey = key_of(ns, 'workers'), body_key(ns, user)
  return check_acl({
    { 'ZADD', zkey, '1', 'x' }, { 'ZREM', zkey, 'x' },
    { 'HSET', bkey, 'x', 'v' }, { 'HDEL', bkey, 'x' }, { 'PEXPIRE', bkey, '1' },
  })
end

-- The report as stored: Redis's time and the user it is filed under are
-- written last, so they win over fields of the same name the caller sent.
local function stamp(report, now, user)
  local tail = '"reported_ms":' .. now .. ',"user":' .. cjson.encode(user) .. '}'
  if report:match('^%s*{%s*}%s*$') then return '{' .. tail end
  return (report:gsub('}%s*$', function() return ',' .. tail end, 1))
end

local function parse_ttl(s)
  local ttl = parse_count(s, MAX_TTL_MS)
  if not ttl or ttl < 1 then
    return nil, redis.error_reply('HP_BADARG ttl must be 1 to 3600000 ms')
  end
  return ttl, nil
end

-- A report every reader can decode: strict tokens and UTF-8 (is_strict_json,
-- valid_utf8) and a well-formed object (cjson: is_strict_json looks at the
-- tokens only, and a '{"a":1' stored would fail every hp_workers reader).
local function check_report(report)
  if type(report) ~= 'string' or #report > MAX_REPORT_BYTES or not report:match('^%s*{')
      or not valid_utf8(report) or not is_strict_json(report)
      or not pcall(cjson.decode, report) then
    return redis.error_reply('HP_BADARG report must be a JSON object of at most 4 KiB of UTF-8')
  end
  return nil
end

-- File checked reports of one ACL user: ids[i] -> reports[i] (a repeated id:
-- the last one wins, as with one hp_report after the other).  The limit and
-- the ACL are checked for all of them before the first write.
local function file_reports(ns, user, ttl, ids, reports)
  local now = now_ms()
  local zkey, bkey = key_of(ns, 'workers'), body_key(ns, user)
  local fresh, seen, members = 0, {}, {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      members[#members + 1] = member_of(user, id)
    end
  end
  -- one ZMSCORE for the call's ids (a ZSCORE apiece cost more than the rest)
  local expiries = redis.call('ZMSCORE', zkey, unpack(members))
  for i = 1, #members do
    local expiry = tonumber(expiries[i])
    if not expiry or expiry < now then fresh = fresh + 1 end
  end
  local live = fresh > 0 and redis.call('ZCOUNT', zkey, now, '+inf')
  if live and live + fresh > MAX_REPORTS then
    if #ids == 1 then
      return redis.error_reply('HP_LIMIT the namespace already holds 50000 live worker reports')
    end
    return redis.error_reply('HP_LIMIT the namespace holds ' .. live .. ' live worker reports: '
      .. fresh .. ' new ones would pass 50000')
  end
  local err = check_fleet_acl(ns, user)
  if err then return err end
  -- dead entries are dropped at the pace reports arrive: 100 per report
  expire_workers(ns, now, user, math.min(100 * #ids, MAX_EXPIRE))
  local index, bodies = { zkey }, { bkey } -- one ZADD and one HSET for all
  for i, id in ipairs(ids) do
    index[2 * i], index[2 * i + 1] = now + ttl, member_of(user, id)
    bodies[2 * i], bodies[2 * i + 1] = id, stamp(reports[i], now, user)
  end
  redis.call('ZADD', unpack(index))
  redis.call('HSET', unpack(bodies))
  if redis.call('PTTL', bkey) < ttl then redis.call('PEXPIRE', bkey, ttl) end
  return now
end

--[[ hp_report (a Live handle's heartbeat)
KEYS[1] namespace
ARGV[1] worker id (host:pid:name), 1-256 bytes of UTF-8 without control characters
ARGV[2] the report: a JSON object of at most 4 KiB ("reported_ms", Redis's
        clock, and "user" are added here)
ARGV[3] time to live in milliseconds (1 to 3600000): the report vanishes unless renewed
ARGV[4] the ACL user the caller connects as ("default" if left out): the
        report goes into that user's key, so Redis's ACL refuses a user
        that says it is another (HP_NOPERM)
Returns Redis's time in ms.  A new report is refused (HP_LIMIT) while the
namespace holds 50,000 live reports.
]]
local function hp_report(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  if #argv ~= 3 and #argv ~= 4 then
    return redis.error_reply('HP_BADARG usage: hp_report 1 <ns> <worker id> <report> '
      .. '<ttl ms> [<acl user>]')
  end
  local id, report = argv[1], argv[2]
  err = check_worker_id(id)
  if err then return err end
  local ttl, user
  ttl, err = parse_ttl(argv[3])
  if err then return err end
  user, err = report_user(argv[4])
  if err then return err end
  err = check_report(report)
  if err then return err end
  return file_reports(ns, user, ttl, { id }, { report })
end

--[[ hp_reports (the heartbeats of several Live handles of one process, in one call)
KEYS[1] namespace
ARGV[1] time to live in milliseconds (1 to 3600000), for every report of the call
ARGV[2] the ACL user the caller connects as (as hp_report's ARGV[4], here required)
ARGV[3..] worker id, report pairs: 1 to 256 pairs, each checked as hp_report
          checks its ARGV[1] and ARGV[2]
Each pair is filed exactly as hp_report would file it.  Atomic: every pair
is checked before the first write, so one bad pair (HP_BADARG naming its
place) refuses the whole call and nothing is written.  Returns Redis's time
in ms.  HP_LIMIT: the call's new ids would take the namespace past 50,000
live reports (none of the call is filed).
]]
local function hp_reports(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  if #argv < 4 or #argv % 2 ~= 0 or (#argv - 2) / 2 > MAX_REPORTS_PAIRS then
    return redis.error_reply('HP_BADARG usage: hp_reports 1 <ns> <ttl ms> <acl user> '
      .. '<worker id> <report> [<worker id> <report> ...] (1 to 256 pairs)')
  end
  local ttl, user
  ttl, err = parse_ttl(argv[1])
  if err then return err end
  user, err = report_user(argv[2])
  if err then return err end
  local ids, reports = {}, {}
  for i = 3, #argv, 2 do
    local pair = (i - 1) / 2
    err = check_worker_id(argv[i]) or check_report(argv[i + 1])
    if err then
      return redis.error_reply(err.err .. ' (pair ' .. pair .. ')')
    end
    ids[pair], reports[pair] = argv[i], argv[i + 1]
  end
  return file_reports(ns, user, ttl, ids, reports)
end

--[[ hp_leave (a Live handle that closes cleanly)
KEYS[1] namespace
ARGV[1] worker id
ARGV[2] the ACL user it reported as ("default" if left out)
Returns 1 if the worker was listed, else 0
]]
local function hp_leave(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  if #argv ~= 1 and #argv ~= 2 then
    return redis.error_reply('HP_BADARG usage: hp_leave 1 <ns> <worker id> [<acl user>]')
  end
  err = check_worker_id(argv[1])
  if err then return err end
  local user
  user, err = report_user(argv[2])
  if err then return err end
  err = check_fleet_acl(ns, user)
  if err then return err end
  redis.call('HDEL', body_key(ns, user), argv[1])
  return redis.call('ZREM', key_of(ns, 'workers'), member_of(user, argv[1]))
end

--[[ hp_workers (read-only)
KEYS[1] namespace
ARGV[1] a cursor: "0" to start, then the one the previous page returned
ARGV[2] how many index entries to look at (1 to 1000; a hint, as for ZSCAN)
Returns {now ms, next cursor ("0": done), id, report JSON, id, report JSON, ...}
of the live workers of one page; every report live during the whole walk is
returned at least once (a caller drops repeats by user and id).
Without ARGV (calling convention 1): {now ms, id, report, ...} of every live
worker at once (work grows with the fleet: clients of convention 2 page).
]]
local function live_reports(ns, now, members, out)
  local bodies = {} -- user -> key: a page holds few users
  for i = 1, #members, 2 do
    if tonumber(members[i + 1]) >= now then
      local user, id = split_member(members[i])
      local bkey = user and bodies[user]
      if user and not bkey then
        bkey = body_key(ns, user)
        bodies[user] = bkey
      end
      local report = bkey and redis.call('HGET', bkey, id)
      if report then
        out[#out + 1] = id
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
redis.register_function('hp_reports', hp_reports)
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
