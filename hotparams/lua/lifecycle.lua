-- lifecycle.lua: part of the hotparams Lua library, appended to the files
-- before it at load time (hotparams/library.py PARTS); a namespace's life:
-- its settings (hp_configure), its schema's evolution (the monotone rule of
-- hp_register, hp_migrate), its end (hp_delete) and a summary (hp_info).
--
-- Keys used here besides those of hotparams.lua
--   hp:{ns}:deleted   hash   the tombstone of a deleted namespace: author,
--                            reason, source, ts (ms), epoch, version; it
--                            outlives the namespace and a new registration

-- ------------------------------------------------------------------ limits

-- the most fields a schema may have (stored versions are one hash each, and
-- a field count past Lua's stack would break every write half-way)
local MAX_FIELDS = 1000
-- the largest rules document (hp_register, hp_migrate), bytes
local MAX_RULES_BYTES = 1048576
-- the largest options document, bytes
local MAX_OPTIONS_BYTES = 65536

-- hard caps of the namespace settings: {lowest, highest}
local SETTINGS = { 'retention', 'audit_maxlen', 'max_value_bytes' }
local SETTING_CAPS = {
  retention = { 1, 10000 },
  audit_maxlen = { 100, 1000000 },
  max_value_bytes = { 1, 16777216 },
}

-- A setting's value as a number within its caps, or nil and an error reply.
local function check_setting(name, value)
  local caps = SETTING_CAPS[name]
  if not caps then
    return nil, redis.error_reply('HP_BADARG unknown setting ' .. tostring(name)
      .. ' (known: retention, audit_maxlen, max_value_bytes)')
  end
  local n = tonumber(value)
  if type(value) ~= 'number' and not (type(value) == 'string' and value:match('^%d+$')) then
    n = nil
  end
  if not n or n ~= math.floor(n) or n < caps[1] or n > caps[2] then
    return nil, redis.error_reply('HP_BADARG ' .. name .. ' must be an integer from '
      .. caps[1] .. ' to ' .. caps[2])
  end
  return n, nil
end

-- The settings named in `doc` (a decoded JSON object), checked; or an error.
local function settings_in(doc)
  local out = {}
  if doc == nil then return out, nil end
  if type(doc) ~= 'table' then
    return nil, redis.error_reply('HP_BADARG settings must be a JSON object')
  end
  for _, name in ipairs(SETTINGS) do
    if doc[name] ~= nil then
      local n, err = check_setting(name, doc[name])
      if err then return nil, err end
      out[name] = n
    end
  end
  return out, nil
end

-- A rules document decoded and bounded, or nil and an error reply.
local function decode_rules(text)
  if type(text) ~= 'string' or #text > MAX_RULES_BYTES then
    return nil, redis.error_reply('HP_BADARG rules must be a JSON document of at most '
      .. MAX_RULES_BYTES .. ' bytes')
  end
  if not valid_utf8(text) or not is_strict_json(text) then
    return nil, redis.error_reply('HP_BADARG rules are not strict JSON in UTF-8')
  end
  local ok, rules = pcall(cjson.decode, text)
  if not ok or type(rules) ~= 'table' or type(rules.fields) ~= 'table' then
    return nil, redis.error_reply('HP_BADARG rules must be a JSON object with "fields"')
  end
  local count = 0
  for name, rule in pairs(rules.fields) do
    count = count + 1
    if type(name) ~= 'string' or type(rule) ~= 'table' then
      return nil, redis.error_reply('HP_BADARG rules.fields must map names to rules')
    end
  end
  if count == 0 then
    return nil, redis.error_reply('HP_BADARG rules.fields must name at least one field')
  end
  if count > MAX_FIELDS then
    return nil, redis.error_reply('HP_BADARG a schema has at most ' .. MAX_FIELDS
      .. ' fields (got ' .. count .. ')')
  end
  return rules, nil
end

-- An options document decoded and bounded, or nil and an error reply.
local function decode_options(text)
  if type(text) ~= 'string' or #text > MAX_OPTIONS_BYTES then
    return nil, redis.error_reply('HP_BADARG options must be a JSON object of at most '
      .. MAX_OPTIONS_BYTES .. ' bytes')
  end
  if not valid_utf8(text) or not is_strict_json(text) then
    return nil, redis.error_reply('HP_BADARG options are not strict JSON in UTF-8')
  end
  local ok, opts = pcall(cjson.decode, text)
  if not ok or type(opts) ~= 'table' then
    return nil, redis.error_reply('HP_BADARG options must be a JSON object')
  end
  return opts, nil
end

-- ------------------------------------------------------------------ schema evolution

local function deep_equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- How `incoming` relates to the `stored` rules.  "model" (the class that
-- registered) is not part of a schema's identity.  Returns the stored
-- fields it lacks, the stored fields (and other keys, as "@key") whose rule
-- it changes, and how many fields or keys it adds.
local function compare_rules(stored, incoming)
  local missing, changed, added = {}, {}, 0
  for _, name in ipairs(sorted_keys(stored.fields)) do
    local rule = incoming.fields[name]
    if rule == nil then
      missing[#missing + 1] = name
    elseif not deep_equal(rule, stored.fields[name]) then
      changed[#changed + 1] = name
    end
  end
  for name in pairs(incoming.fields) do
    if stored.fields[name] == nil then added = added + 1 end
  end
  for _, key in ipairs(sorted_keys(stored)) do
    if key ~= 'fields' and key ~= 'model' and not deep_equal(stored[key], incoming[key]) then
      if incoming[key] == nil then
        missing[#missing + 1] = '@' .. key
      else
        changed[#changed + 1] = '@' .. key
      end
    end
  end
  for key in pairs(incoming) do
    if key ~= 'model' and stored[key] == nil then added = added + 1 end
  end
  return missing, changed, added
end

-- ------------------------------------------------------------------ audit entries

-- An audit entry of an operation that writes no version (configure, delete).
local function audit_only(ns, meta, op, opts, extra)
  local entry = {
    'v', tostring(meta.version), 'prev', tostring(meta.version), 'op', op,
    'author', opts.author or '', 'reason', opts.reason or '',
    'source', opts.source or 'redis', 'ts', tostring(now_ms()),
    'schema', tostring(meta.schema_rev), 'changes', '{}',
  }
  for _, pair in ipairs(extra) do
    entry[#entry + 1] = pair[1]
    entry[#entry + 1] = pair[2]
  end
  redis.call('XADD', key_of(ns, 'audit'), 'MAXLEN', '~', meta.audit_maxlen, '*', unpack(entry))
end

-- ------------------------------------------------------------------ functions

--[[ hp_configure (settings are operations: checked, capped, audited)
KEYS[1] namespace
ARGV    setting value [setting value ...], then @author A @reason R @source S
        @expect N; settings (hard caps):
          retention        versions kept, 1-10000
          audit_maxlen     audit entries kept (approximately), 100-1000000
          max_value_bytes  largest JSON text of one value, 1-16777216
Older versions past a lower retention, and audit entries past a lower
audit_maxlen, are trimmed now.  A max_value_bytes that a stored value
(base or variant override) exceeds is refused.
Returns {changed (0/1), retention, audit_maxlen, max_value_bytes}
]]
local function hp_configure(keys, argv)
  local ns, meta, err = open_namespace(keys)
  if err then return err end
  local args
  args, err = parse_args(argv, 1)
  if err then return err end
  if #args.fields == 0 or #args.unset > 0 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_configure 1 <namespace> '
      .. '<setting> <value> ... (settings: retention, audit_maxlen, max_value_bytes)')
  end
  err = check_expect(meta, args.opts)
  if err then return err end
  local wanted = {}
  for _, pair in ipairs(args.fields) do
    local n
    n, err = check_setting(pair[1], pair[2])
    if err then return err end
    wanted[pair[1]] = n
  end
  local changes, parts = {}, {}
  for _, name in ipairs(SETTINGS) do
    local n = wanted[name]
    if n ~= nil and n ~= meta[name] then
      changes[#changes + 1] = { name, meta[name], n }
      parts[#parts + 1] = cjson.encode(name) .. ':[' .. meta[name] .. ',' .. n .. ']'
    end
  end
  local function reply()
    return { #changes > 0 and 1 or 0, meta.retention, meta.audit_maxlen, meta.max_value_bytes }
  end
  if #changes == 0 then return reply() end
  if wanted.max_value_bytes and wanted.max_value_bytes < meta.max_value_bytes then
    local limit = wanted.max_value_bytes
    local problems = {}
    local values = load_values(ns, meta.version) or {}
    for _, name in ipairs(sorted_keys(values)) do
      if #values[name] > limit then
        problems[#problems + 1] = { name, 'stored value is ' .. #values[name]
          .. ' bytes, more than the new max_value_bytes ' .. limit }
      end
    end
    if #problems > 0 then return invalid(problems) end
    local variants = load_variants(ns, meta.version)
    if variants then
      local rules = load_rules(ns, meta.schema_rev)
      err = check_variants(rules, variants, limit)
      if err then return err end
    end
  end
  err = check_acl({
    { 'HSET', key_of(ns, 'meta'), 'f', 'v' }, { 'DEL', key_of(ns, 'v:' .. meta.version) },
    { 'XTRIM', key_of(ns, 'audit'), 'MAXLEN', '1' }, { 'XADD', key_of(ns, 'audit'), '*', 'f', 'v' },
  })
  if err then return err end
  -- all checks done: write
  local flat = {}
  for _, c in ipairs(changes) do
    flat[#flat + 1] = c[1]
    flat[#flat + 1] = c[3]
    meta[c[1]] = c[3]
  end
  redis.call('HSET', key_of(ns, 'meta'), unpack(flat))
  if wanted.retention and meta.oldest then
    local oldest = meta.oldest
    while oldest <= meta.version - meta.retention do
      redis.call('DEL', key_of(ns, 'v:' .. oldest))
      oldest = oldest + 1
    end
    if oldest ~= meta.oldest then redis.call('HSET', key_of(ns, 'meta'), 'oldest', oldest) end
  end
  if wanted.audit_maxlen then
    redis.call('XTRIM', key_of(ns, 'audit'), 'MAXLEN', '~', meta.audit_maxlen)
  end
  audit_only(ns, meta, 'configure', args.opts,
    { { 'settings', '{' .. table.concat(parts, ',') .. '}' } })
  return reply()
end

--[[ hp_delete
KEYS[1] namespace
ARGV    @author A @reason R @source S [@expect N] [@rid ID]
Deletes the namespace's meta, schema, retained versions, exposure counts and
request ids (they belong to the history that ends) and leaves a tombstone (hp:{ns}:deleted: author, reason, source, ts, epoch,
version, and the request id: a retry answers the same version) that
outlives it; the audit stream stays, with an entry "delete".
Running workers keep their last good snapshot and report the deletion; a
later hp_register starts a new history (epoch).
Returns the version the namespace had
]]
local function hp_delete(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local args
  args, err = parse_args(argv, 1)
  if err then return err end
  if not load_meta(ns) and args.opts.rid ~= nil then
    -- a retry of a delete that committed (its reply was lost): its answer again
    local done = redis.call('HMGET', key_of(ns, 'deleted'), 'rid', 'version')
    if done[1] == args.opts.rid then return tonumber(done[2]) end
  end
  local meta
  ns, meta, err = open_namespace(keys)
  if err then return err end
  if #args.fields > 0 or #args.unset > 0 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_delete 1 <namespace> '
      .. '[@author A] [@reason R] [@expect N]')
  end
  err = check_expect(meta, args.opts)
  if err then return err end
  err = check_acl({
    { 'DEL', key_of(ns, 'meta') }, { 'HSET', key_of(ns, 'deleted'), 'f', 'v' },
    { 'XADD', key_of(ns, 'audit'), '*', 'f', 'v' }, { 'SPUBLISH', key_of(ns, 'events'), 'x' },
  })
  if err then return err end
  -- all checks done: write
  local opts = args.opts
  local ts = now_ms()
  local oldest = meta.oldest or meta.version
  for n = oldest, meta.version do redis.call('DEL', key_of(ns, 'v:' .. n)) end
  redis.call('DEL', key_of(ns, 'meta'), key_of(ns, 'schema'), key_of(ns, 'exposures'),
    key_of(ns, 'rids'), key_of(ns, 'rids:at'), key_of(ns, 'deleted'))
  redis.call('HSET', key_of(ns, 'deleted'), 'author', opts.author or '',
    'reason', opts.reason or '', 'source', opts.source or 'redis', 'ts', ts,
    'epoch', meta.epoch, 'version', meta.version, 'rid', opts.rid or '')
  audit_only(ns, meta, 'delete', opts, { { 'epoch', meta.epoch } })
  redis.call('SPUBLISH', key_of(ns, 'events'), '{"ns":' .. cjson.encode(ns)
    .. ',"epoch":' .. cjson.encode(meta.epoch) .. ',"op":"delete","v":' .. meta.version
    .. ',"prev":' .. meta.version .. ',"ts":' .. ts .. ',"schema":' .. meta.schema_rev
    .. ',"changed":{},"removed":[],"redacted":[]}')
  return meta.version
end

--[[ hp_migrate (the explicit, audited change of a schema)
KEYS[1] namespace
ARGV[1] the new validation rules (JSON); every stored field must be in them,
        dropped or renamed
ARGV[2] options (JSON object): drop (list of fields), rename ({old: new}),
        base_rev (fail with HP_STALE unless the schema revision is still this),
        expect (a version), dry_run (true: only the plan), rid (request id:
        a retry of a migration that committed answers its version and an
        empty plan), author, reason, source
Each stored value (base and A/B variant overrides) must fit the new rules;
a field that a variant overrides cannot be dropped or renamed (change the
variant first).
Returns the plan as JSON: {"version": V, "schema_rev": R, "applied": bool,
"fields": [{"field", "action": kept|dropped|renamed|replaced|added|invalid,
"to", "reason"}...]}: "replaced" is a stored field that a rename onto it
replaces; without dry_run a plan with an invalid field is an
HP_INVALID error and nothing is written.
]]
local function hp_migrate(keys, argv)
  local ns, meta, err = open_namespace(keys)
  if err then return err end
  local rules
  rules, err = decode_rules(argv[1])
  if err then return err end
  local opts
  opts, err = decode_options(argv[2] or '{}')
  if err then return err end
  if #argv > 2 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_migrate 1 <namespace> <rules> <options>')
  end
  local drop, rename = opts.drop or {}, opts.rename or {}
  if type(drop) ~= 'table' or type(rename) ~= 'table' then
    return redis.error_reply('HP_BADARG options.drop must be a list, options.rename an object')
  end
  for _, name in ipairs({ 'author', 'reason', 'source', 'rid' }) do
    if opts[name] ~= nil and type(opts[name]) ~= 'string' then
      return redis.error_reply('HP_BADARG options.' .. name .. ' must be a string')
    end
  end
  if opts.rid ~= nil and (#opts.rid > 64 or not opts.rid:match('^[%w_%-]+$')) then
    return redis.error_reply('HP_BADARG options.rid must be 1-64 characters of letters, '
      .. 'digits, "_" or "-"')
  end
  local done = replayed(ns, opts)
  if done then
    return '{"version":' .. done .. ',"schema_rev":' .. meta.schema_rev
      .. ',"applied":true,"fields":[]}'
  end
  if opts.base_rev ~= nil and tonumber(opts.base_rev) ~= meta.schema_rev then
    return redis.error_reply('HP_STALE ' .. meta.version)
  end
  if opts.expect ~= nil then
    err = check_expect(meta, { expect = tostring(opts.expect) })
    if err then return err end
  end
  local stored = load_rules(ns, meta.schema_rev)
  local old, variants
  old, variants, err = intact_version(ns, meta, meta.version)
  if err then return err end
  local dropped, renamed, sources = {}, {}, {}
  local problems = {}
  for _, name in ipairs(drop) do
    if type(name) ~= 'string' or stored.fields[name] == nil then
      problems[#problems + 1] = { tostring(name), 'cannot be dropped: not a stored field' }
    elseif rules.fields[name] ~= nil then
      problems[#problems + 1] = { name, 'cannot be dropped: it is in the new schema' }
    else
      dropped[name] = true
    end
  end
  for from, to in pairs(rename) do
    if type(from) ~= 'string' or type(to) ~= 'string' then
      return redis.error_reply('HP_BADARG options.rename must map names to names')
    end
    if stored.fields[from] == nil then
      problems[#problems + 1] = { from, 'cannot be renamed: not a stored field' }
    elseif rules.fields[to] == nil then
      problems[#problems + 1] = { from, 'cannot be renamed to ' .. to
        .. ': the new schema has no field ' .. to }
    elseif rules.fields[from] ~= nil then
      problems[#problems + 1] = { from, 'cannot be renamed: it is in the new schema' }
    elseif dropped[from] then
      problems[#problems + 1] = { from, 'cannot be both dropped and renamed' }
    elseif sources[to] ~= nil then
      problems[#problems + 1] = { from, 'cannot be renamed to ' .. to
        .. ': ' .. sources[to] .. ' is renamed to it too' }
    else
      renamed[from] = to
      sources[to] = from
    end
  end
  if #problems > 0 then return invalid(problems) end
  local missing, changed, added = compare_rules(stored, rules)
  local nothing = #missing == 0 and #changed == 0 and added == 0
  local vdoc = variants and cjson.decode(variants) or nil
  if vdoc then
    for _, vname in ipairs(sorted_keys(vdoc.variants or {})) do
      for field in pairs(vdoc.variants[vname].overrides or {}) do
        if dropped[field] or renamed[field] then
          problems[#problems + 1] = { 'variant ' .. vname .. ' ' .. field,
            'is overridden by the variant: change or remove the variant first' }
        end
      end
    end
  end
  if #problems > 0 then return invalid(problems) end

  -- the plan: what happens to each stored value
  local new, plan = {}, {}
  local function entry(field, action, to, reason)
    local e = '{"field":' .. cjson.encode(field) .. ',"action":"' .. action .. '"'
    if to then e = e .. ',"to":' .. cjson.encode(to) end
    if reason then e = e .. ',"reason":' .. cjson.encode(reason) end
    plan[#plan + 1] = e .. '}'
    if action == 'invalid' then problems[#problems + 1] = { to or field, reason } end
  end
  for _, name in ipairs(sorted_keys(stored.fields)) do
    local raw = old[name]
    if dropped[name] then
      entry(name, 'dropped')
    elseif renamed[name] then
      local to = renamed[name]
      local reason = raw and check_value(rules.fields[to], raw, meta.max_value_bytes)
      if reason then entry(name, 'invalid', to, reason) else entry(name, 'renamed', to) end
      new[to] = raw
    elseif sources[name] then
      -- a field stored already (a release registered it first): the renamed
      -- value takes its place
      entry(name, 'replaced', nil, 'by the value of ' .. sources[name])
    elseif rules.fields[name] == nil then
      entry(name, 'invalid', nil, 'stored but not in the new schema: drop or rename it')
    elseif raw ~= nil then
      local reason = check_value(rules.fields[name], raw, meta.max_value_bytes)
      if reason then entry(name, 'invalid', nil, reason) else entry(name, 'kept') end
      new[name] = raw
    end
  end
  for _, name in ipairs(sorted_keys(rules.fields)) do
    if new[name] == nil then
      local default = rules.fields[name].default
      if default == nil then
        entry(name, 'invalid', nil, 'required (the field has no default)')
      else
        local reason = check_value(rules.fields[name], default, meta.max_value_bytes)
        if reason then entry(name, 'invalid', nil, 'default: ' .. reason)
        else entry(name, 'added') end
        new[name] = default
      end
    end
  end
  if #problems == 0 and variants then
    err = check_variants(rules, variants, meta.max_value_bytes)
    if err then return err end
  end
  if #problems == 0 then
    err = check_cross(rules, new, variants)
    if err then return err end
  end
  local function plan_json(version, rev, applied)
    return '{"version":' .. version .. ',"schema_rev":' .. rev .. ',"applied":'
      .. tostring(applied) .. ',"fields":[' .. table.concat(plan, ',') .. ']}'
  end
  if opts.dry_run == true or (nothing and #problems == 0) then
    return plan_json(meta.version, meta.schema_rev, false)
  end
  if #problems > 0 then return invalid(problems) end
  err = check_write_acl(ns, meta.version + 1)
  if err then return err end
  -- all checks done: write
  local rev = meta.schema_rev + 1
  redis.call('HSET', key_of(ns, 'schema'), tostring(rev), argv[1])
  local detail = {}
  if next(dropped) then detail[#detail + 1] = '"drop":' .. cjson.encode(sorted_keys(dropped)) end
  if next(renamed) then
    local parts = {}
    for _, from in ipairs(sorted_keys(renamed)) do
      parts[#parts + 1] = cjson.encode(from) .. ':' .. cjson.encode(renamed[from])
    end
    detail[#detail + 1] = '"rename":{' .. table.concat(parts, ',') .. '}'
  end
  local wopts = { author = opts.author, reason = opts.reason, source = opts.source,
    rid = opts.rid }
  local v = write_version(ns, meta, rules, rev, old, new, 'migrate', wopts,
    { { 'migration', '{' .. table.concat(detail, ',') .. '}' } }, variants, variants)
  return plan_json(v, rev, true)
end

--[[ hp_info (read-only; one line of `hotparams list`)
KEYS[1] namespace
Returns {version, epoch, commit ms, schema_rev, retention, audit_maxlen,
max_value_bytes, last change's author, last change's op, live workers}
]]
local function hp_info(keys)
  local ns, meta, err = open_namespace(keys)
  if err then return err end
  local last = redis.call('XREVRANGE', key_of(ns, 'audit'), '+', '-', 'COUNT', 1)
  local author, op = '', ''
  if last[1] then
    local f = last[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'author' then author = f[i + 1] elseif f[i] == 'op' then op = f[i + 1] end
    end
  end
  local workers = redis.call('ZCOUNT', key_of(ns, 'workers'), now_ms(), '+inf')
  return { meta.version, meta.epoch, meta.ts or '0', meta.schema_rev, meta.retention,
    meta.audit_maxlen, meta.max_value_bytes, author, op, workers }
end

redis.register_function('hp_configure', hp_configure)
redis.register_function('hp_delete', hp_delete)
redis.register_function('hp_migrate', hp_migrate)
redis.register_function { function_name = 'hp_info', callback = hp_info, flags = { 'no-writes' } }
