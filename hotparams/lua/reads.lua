-- reads.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); the read-only functions.

--[[ hp_get (read-only)
KEYS[1] namespace
ARGV[1] optional version (default: the current one; "" for it too)
ARGV[2] optional "digest": also return the version's content digest as the
        pair "@digest", <sha1 hex> (clients of calling convention 3)
Returns {version, epoch, commit ms, schema_rev, field, JSON value, ...}; the
version is checked whole first: an HP_DAMAGED error when its hash is gone or
lacks a field (a partial loss).  A complete hash whose content no longer
matches its digest (written around the functions) is returned as stored:
readers validate it, and writes refuse it (HP_DAMAGED)
]]
local function hp_get(keys, argv)
  local ns, meta, err = open_namespace(keys)
  if err then return err end
  local v = meta.version
  if argv[1] and argv[1] ~= '' then
    if not argv[1]:match('^%d+$') then
      return redis.error_reply('HP_BADARG version must be a number')
    end
    v = tonumber(argv[1])
  end
  local flat = {}
  if v >= (meta.oldest or 1) and v <= meta.version then
    flat = redis.call('HGETALL', key_of(ns, 'v:' .. v))
  end
  if #flat == 0 and v ~= meta.version then
    return redis.error_reply('HP_NOVERSION version ' .. v .. ' of ' .. ns
      .. ' is not retained (oldest is ' .. tostring(meta.oldest) .. ', current is '
      .. meta.version .. ')')
  end
  local _, _, damage = intact_version(ns, meta, v, flat, true)
  if damage then return damage end
  local with_digest = argv[2] == 'digest'
  local out = { v, meta.epoch, '0', '0' }
  for i = 1, #flat, 2 do
    local name = flat[i]
    if name == '@ts' then out[3] = flat[i + 1]
    elseif name == '@schema' then out[4] = flat[i + 1]
    elseif name ~= '@digest' or with_digest then
      out[#out + 1] = name
      out[#out + 1] = flat[i + 1]
    end
  end
  return out
end

--[[ hp_head (read-only; the cheap reconcile probe)
KEYS[1] namespace
ARGV[1] optional "digest": also return the current version's digest, after
        checking that its hash still holds it (else HP_DAMAGED)
Returns {version, epoch, commit ms, schema_rev[, digest]}
]]
local function hp_head(keys, argv)
  local ns, meta, err = open_namespace(keys)
  if err then return err end
  if argv[1] == 'digest' then
    -- cheap, but it notices a lost current version hash (eviction)
    if meta.digest and redis.call('HGET', key_of(ns, 'v:' .. meta.version), '@digest')
        ~= meta.digest then
      local _, _, damage = intact_version(ns, meta, meta.version, nil, true)
      if damage then return damage end
    end
    return { meta.version, meta.epoch, meta.ts or '0', meta.schema_rev, meta.digest or '' }
  end
  return { meta.version, meta.epoch, meta.ts or '0', meta.schema_rev }
end

--[[ hp_show (read-only; for people at redis-cli)
KEYS[1] namespace
Returns one JSON document: namespace, version, epoch, committed (ms) and
values, secret values masked
]]
local function hp_show(keys)
  local ns, meta, err = open_namespace(keys)
  if err then return err end
  local rules = load_rules(ns, meta.schema_rev)
  local values = load_values(ns, meta.version) or {}
  local parts = {}
  for _, name in ipairs(sorted_keys(values)) do
    local raw = values[name]
    if is_secret(rules, name) then raw = cjson.encode(MASK) end
    parts[#parts + 1] = cjson.encode(name) .. ':' .. raw
  end
  return '{"namespace":' .. cjson.encode(ns) .. ',"version":' .. meta.version
    .. ',"epoch":' .. cjson.encode(meta.epoch) .. ',"committed_ms":' .. (meta.ts or '0')
    .. ',"values":{' .. table.concat(parts, ',') .. '}}'
end

--[[ hp_history (read-only; for people at redis-cli)
KEYS[1] namespace
ARGV[1] optional number of changes (default 10)
Returns one JSON document per change, newest first: v, prev, op, target (a
rollback's version), author, reason, source, ts (ms), schema and changes
({field: [old, new]}, secret values masked), as in the audit stream
]]
local function hp_history(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local count = 10
  if argv[1] and argv[1] ~= '' then
    count = tonumber(argv[1]:match('^%d%d?%d?%d?%d?$') or '')  -- 1-99999: XREVRANGE's COUNT
    if not count or count < 1 then
      return redis.error_reply('HP_BADARG count must be a positive integer (at most 99999)')
    end
  end
  local meta
  meta, err = require_meta(ns)
  if not meta then return err end
  local out = {}
  local entries = redis.call('XREVRANGE', key_of(ns, 'audit'), '+', '-', 'COUNT', count)
  for _, entry in ipairs(entries) do
    local f = {}
    for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
    local target = f.target and (',"target":' .. f.target) or ''
    out[#out + 1] = '{"v":' .. f.v .. ',"prev":' .. (f.prev or '0')
      .. ',"op":' .. cjson.encode(f.op or '') .. target
      .. ',"author":' .. cjson.encode(f.author or '')
      .. ',"reason":' .. cjson.encode(f.reason or '')
      .. ',"source":' .. cjson.encode(f.source or '')
      .. ',"ts":' .. (f.ts or '0') .. ',"schema":' .. (f.schema or '0')
      .. ',"changes":' .. (f.changes or '{}') .. '}'
  end
  return out
end

redis.register_function { function_name = 'hp_get', callback = hp_get, flags = { 'no-writes' } }
redis.register_function { function_name = 'hp_head', callback = hp_head, flags = { 'no-writes' } }
redis.register_function { function_name = 'hp_show', callback = hp_show, flags = { 'no-writes' } }
redis.register_function { function_name = 'hp_history', callback = hp_history,
  flags = { 'no-writes' } }
