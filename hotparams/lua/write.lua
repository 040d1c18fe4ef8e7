-- write.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); writing a version: values,
-- retention, audit entry and change event, after every check has passed.

-- ------------------------------------------------------------------ writing

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function diff(old, new)
  local changed, removed = {}, {}
  for _, name in ipairs(sorted_keys(new)) do
    if old[name] ~= new[name] then changed[#changed + 1] = name end
  end
  for _, name in ipairs(sorted_keys(old)) do
    if new[name] == nil then removed[#removed + 1] = name end
  end
  return changed, removed
end

local function is_secret(rules, name)
  local rule = rules.fields[name]
  return rule ~= nil and rule.secret == true
end

-- The caller's ACL user may run each of these commands (a list of
-- {command, arg...}), or an HP_NOPERM error reply naming the first it may
-- not: checked before a function's first write, so an ACL that allows only
-- part of a write refuses all of it instead of leaving it half-written.
local function check_acl(calls)
  if not redis.acl_check_cmd then return nil end -- a server without ACLs
  for _, call in ipairs(calls) do
    if not redis.acl_check_cmd(unpack(call)) then
      return redis.error_reply('HP_NOPERM run ' .. call[1] .. ' on ' .. call[2])
    end
  end
  return nil
end

-- Every command a write of version v runs (register's schema included).
local function check_write_acl(ns, v)
  return check_acl({
    { 'HSET', key_of(ns, 'v:' .. v), 'f', 'v' }, { 'DEL', key_of(ns, 'v:' .. (v - 1)) },
    { 'HSET', key_of(ns, 'meta'), 'f', 'v' }, { 'HSET', key_of(ns, 'schema'), 'f', 'v' },
    { 'XADD', key_of(ns, 'audit'), '*', 'f', 'v' },
    { 'SPUBLISH', key_of(ns, 'events'), 'x' },
    { 'HSET', key_of(ns, 'rids'), 'f', 'v' }, { 'HDEL', key_of(ns, 'rids'), 'f' },
    { 'ZADD', key_of(ns, 'rids:at'), '1', 'm' }, { 'ZREM', key_of(ns, 'rids:at'), 'm' },
    { 'PEXPIRE', key_of(ns, 'rids'), '1' },
  })
end

-- Record that request `rid` committed version v; forget ids older than
-- REQUEST_IDS_TTL_MS and the oldest beyond REQUEST_IDS_KEPT (bounded work).
local function remember_request(ns, rid, v, ts)
  local hkey, zkey = key_of(ns, 'rids'), key_of(ns, 'rids:at')
  redis.call('HSET', hkey, rid, v)
  redis.call('ZADD', zkey, ts, rid)
  local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. (ts - REQUEST_IDS_TTL_MS),
    'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', zkey, unpack(old))
    redis.call('HDEL', hkey, unpack(old))
  end
  local extra = redis.call('ZCARD', zkey) - REQUEST_IDS_KEPT
  if extra > 0 then
    local ids = redis.call('ZRANGE', zkey, 0, math.min(extra, 100) - 1)
    redis.call('ZREM', zkey, unpack(ids))
    redis.call('HDEL', hkey, unpack(ids))
  end
  redis.call('PEXPIRE', hkey, REQUEST_IDS_TTL_MS)
  redis.call('PEXPIRE', zkey, REQUEST_IDS_TTL_MS)
end

-- A value as the audit keeps it: itself, or past AUDIT_INLINE_BYTES its
-- digest and size (so the audit is bounded in bytes, not only in entries).
local function audited(raw)
  if #raw <= AUDIT_INLINE_BYTES then return raw end
  return '{"$large":{"sha1":"' .. redis.sha1hex(raw) .. '","bytes":' .. #raw .. '}}'
end

-- Write `new` (complete values) as the next version; everything has been
-- checked by the caller.  Returns the new version, or the current one when
-- nothing changed.
local function write_version(ns, meta, rules, rev, old, new, op, opts, extra_audit,
                             vold, vnew)
  local changed, removed = diff(old, new)
  local variants_changed = vold ~= vnew
  -- init and migrate always make a version (a migration may change rules only)
  if #changed == 0 and #removed == 0 and not variants_changed and op ~= 'init'
      and op ~= 'migrate' then
    return meta.version
  end
  local prev = meta.version or 0
  local v = prev + 1
  local denied = check_write_acl(ns, v)
  if denied then return denied end
  local ts = now_ms()

  local digest = content_digest(new, vnew, rev)
  local hash = { '@ts', tostring(ts), '@schema', tostring(rev), '@digest', digest }
  if vnew then
    hash[#hash + 1] = '@variants'
    hash[#hash + 1] = vnew
  end
  for name, raw in pairs(new) do
    hash[#hash + 1] = name
    hash[#hash + 1] = raw
  end
  -- a fresh key: nothing of a hash a lost history left at this number survives
  redis.call('DEL', key_of(ns, 'v:' .. v))
  redis.call('HSET', key_of(ns, 'v:' .. v), unpack(hash))

  local oldest = meta.oldest or v
  local retention = meta.retention
  while oldest <= v - retention do
    redis.call('DEL', key_of(ns, 'v:' .. oldest))
    oldest = oldest + 1
  end
  local prev_digest = meta.digest or ''
  redis.call('HSET', key_of(ns, 'meta'), 'version', v, 'ts', ts, 'schema_rev', rev,
    'oldest', oldest, 'digest', digest)
  if opts.rid then remember_request(ns, opts.rid, v, ts) end

  -- audit: values of secret fields are masked
  local audit_parts, event_parts, redacted = {}, {}, {}
  for _, name in ipairs(changed) do
    local before = old[name] or 'null'
    local after = new[name]
    if is_secret(rules, name) then
      if old[name] then before = cjson.encode(MASK) end
      after = cjson.encode(MASK)
      redacted[#redacted + 1] = cjson.encode(name)
    else
      event_parts[#event_parts + 1] = cjson.encode(name) .. ':' .. after
      before, after = audited(before), audited(after)
    end
    audit_parts[#audit_parts + 1] = cjson.encode(name) .. ':[' .. before .. ',' .. after .. ']'
  end
  for _, name in ipairs(removed) do
    local before = audited(old[name])
    if is_secret(rules, name) then before = cjson.encode(MASK) end
    audit_parts[#audit_parts + 1] = cjson.encode(name) .. ':[' .. before .. ',null]'
  end
  local changes_json = '{' .. table.concat(audit_parts, ',') .. '}'
  local entry = {
    'v', tostring(v), 'prev', tostring(prev), 'op', op,
    'author', opts.author or '', 'reason', opts.reason or '',
    'source', opts.source or 'redis', 'ts', tostring(ts),
    'schema', tostring(rev), 'changes', changes_json, 'digest', digest,
  }
  for _, pair in ipairs(extra_audit or {}) do
    entry[#entry + 1] = pair[1]
    entry[#entry + 1] = pair[2]
  end
  local variants_event = ''
  if variants_changed then
    local shown, secret = 'null', false
    if vnew then shown, secret = masked_variants(rules, vnew) end
    entry[#entry + 1] = 'variants'
    entry[#entry + 1] = audited(shown)
    if secret then
      redacted[#redacted + 1] = cjson.encode('@variants')
    else
      variants_event = ',"variants":' .. (vnew or 'null')
    end
  end
  redis.call('XADD', key_of(ns, 'audit'), 'MAXLEN', '~', meta.audit_maxlen, '*', unpack(entry))

  local removed_json = {}
  for _, name in ipairs(removed) do removed_json[#removed_json + 1] = cjson.encode(name) end
  local event = '{"ns":' .. cjson.encode(ns)
    .. ',"epoch":' .. cjson.encode(meta.epoch)
    .. ',"v":' .. v .. ',"prev":' .. prev .. ',"ts":' .. ts
    .. ',"op":' .. cjson.encode(op) .. ',"schema":' .. rev
    .. ',"digest":"' .. digest .. '","prev_digest":"' .. prev_digest .. '"'
    .. ',"changed":{' .. table.concat(event_parts, ',') .. '}'
    .. ',"removed":[' .. table.concat(removed_json, ',') .. ']'
    .. ',"redacted":[' .. table.concat(redacted, ',') .. ']'
    .. variants_event .. '}'
  redis.call('SPUBLISH', key_of(ns, 'events'), event)
  return v
end

local function positive_int(value, name)
  if value == nil then return nil, nil end
  local n = tonumber(value)
  if not n or n < 1 or n ~= math.floor(n) then
    return nil, redis.error_reply('HP_BADARG ' .. name .. ' must be a positive integer')
  end
  return n, nil
end
