-- state.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); arguments, stored state and
-- the checks every write shares.

-- ------------------------------------------------------------------ arguments

local MAX_OPTION_BYTES = 4096
-- the options of hp_commit (the Python API's write); hp_set and hp_unset
-- take only the documented ones (see their headers)
local COMMIT_OPTIONS = {
  expect = true, base = true, author = true, reason = true, source = true,
  replace = true, op = true, variants = true, validated = true, unset = true, check = true,
  rid = true,
}
local EDIT_OPTIONS = { expect = true, author = true, reason = true, source = true, rid = true }
local TEXT_OPTIONS = { author = true, reason = true, source = true, op = true }

-- A field name is an identifier (hotparams/schema.py refuses others), so
-- it never starts with "@": the prefix of every option.
local function check_field_name(name)
  if #name > 128 or not name:match('^[%a_][%w_]*$') then
    local shown = (#name <= 128 and valid_utf8(name)) and cjson.encode(name) or 'a name'
    return redis.error_reply('HP_INVALID ' .. shown .. ': not a field name (field names '
      .. 'are identifiers; "@name" arguments are options)')
  end
  return nil
end

-- Split ARGV (from index `first`) into field/value pairs and @options
-- (`allowed`: the option names the function takes, default hp_commit's).
-- Only counts and sizes are checked here: values are checked later,
-- sizes first.
local function parse_args(argv, first, allowed)
  allowed = allowed or COMMIT_OPTIONS
  local fields, opts, unset = {}, {}, {}
  if (#argv - first + 1) % 2 ~= 0 then
    return nil, redis.error_reply('HP_BADARG arguments must be field/value pairs '
      .. '(got an odd number)')
  end
  local i = first
  while i <= #argv do
    local name, value = argv[i], argv[i + 1]
    if name:sub(1, 1) == '@' then
      local opt = name:sub(2)
      if not allowed[opt] then
        local known = {}
        for _, o in ipairs(ordered(allowed)) do known[#known + 1] = '@' .. o end
        local shown = (#name <= 64 and valid_utf8(name)) and (' ' .. name) or ''
        return nil, redis.error_reply('HP_BADARG unknown option' .. shown
          .. ' (known: ' .. table.concat(known, ' ') .. ')')
      end
      if TEXT_OPTIONS[opt] and (#value > MAX_OPTION_BYTES or not valid_utf8(value)) then
        return nil, redis.error_reply('HP_BADARG ' .. name .. ' must be valid UTF-8 of at most '
          .. MAX_OPTION_BYTES .. ' bytes')
      end
      if opt == 'unset' then
        unset[#unset + 1] = value
      else
        opts[opt] = value
      end
    else
      local err = check_field_name(name)
      if err then return nil, err end
      fields[#fields + 1] = { name, value }
    end
    i = i + 2
  end
  for _, name in ipairs(unset) do
    local err = check_field_name(name)
    if err then return nil, err end
  end
  for _, name in ipairs({ 'expect', 'base' }) do
    if opts[name] ~= nil and not opts[name]:match('^%d+$') then
      return nil, redis.error_reply('HP_BADARG @' .. name .. ' must be a version number')
    end
  end
  if opts.rid ~= nil and (#opts.rid > 64 or not opts.rid:match('^[%w_%-]+$')) then
    return nil, redis.error_reply('HP_BADARG @rid must be 1-64 characters of letters, '
      .. 'digits, "_" or "-"')
  end
  if opts.validated ~= nil and opts.validated ~= '1' then
    return nil, redis.error_reply('HP_BADARG @validated must be 1')
  end
  return { fields = fields, opts = opts, unset = unset }, nil
end

-- ------------------------------------------------------------------ state

local function load_meta(ns)
  local flat = redis.call('HGETALL', key_of(ns, 'meta'))
  if #flat == 0 then return nil end
  local meta = {}
  for i = 1, #flat, 2 do meta[flat[i]] = flat[i + 1] end
  meta.version = tonumber(meta.version)
  meta.schema_rev = tonumber(meta.schema_rev)
  meta.oldest = tonumber(meta.oldest)
  meta.retention = tonumber(meta.retention) or DEFAULT_RETENTION
  meta.audit_maxlen = tonumber(meta.audit_maxlen) or DEFAULT_AUDIT_MAXLEN
  meta.max_value_bytes = tonumber(meta.max_value_bytes) or DEFAULT_MAX_VALUE_BYTES
  return meta
end

local function require_meta(ns)
  local meta = load_meta(ns)
  if not meta then
    -- a deleted namespace says so: its tombstone, as JSON (lifecycle.lua)
    local flat = redis.call('HGETALL', key_of(ns, 'deleted'))
    if #flat > 0 then
      local parts = {}
      for i = 1, #flat, 2 do
        local value = flat[i + 1]
        if flat[i] ~= 'ts' and flat[i] ~= 'version' then value = cjson.encode(value) end
        if flat[i] ~= 'rid' then parts[#parts + 1] = cjson.encode(flat[i]) .. ':' .. value end
      end
      return nil, redis.error_reply('HP_NONS namespace ' .. ns .. ' was deleted {'
        .. table.concat(parts, ',') .. '} (register it again to start a new history)')
    end
    return nil, redis.error_reply('HP_NONS namespace ' .. ns
      .. ' does not exist (register it first)')
  end
  return meta, nil
end

-- The namespace a call names (KEYS[1]) and its meta, or nil, nil and an
-- error reply (a malformed name, or a namespace that does not exist).
local function open_namespace(keys)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return nil, nil, err end
  local meta
  meta, err = require_meta(ns)
  if err then return nil, nil, err end
  return ns, meta, nil
end

-- Decoded rules, keyed by their JSON text (immutable for a given text), so
-- a write does not decode the schema again.  Bounded: cleared when full.
local rules_cache, rules_cached = {}, 0

local function load_rules(ns, rev)
  local text = redis.call('HGET', key_of(ns, 'schema'), tostring(rev))
  if not text then return nil end
  local rules = rules_cache[text]
  if rules == nil then
    rules = cjson.decode(text)
    if rules_cached >= 256 then
      rules_cache, rules_cached = {}, 0
    end
    rules_cache[text] = rules
    rules_cached = rules_cached + 1
  end
  return rules
end

local function sorted_keys(t)
  local names = {}
  for name in pairs(t) do names[#names + 1] = name end
  table.sort(names)
  return names
end

-- The digest of a version's content: its schema revision, its A/B variants
-- document and its values (by field name), each length-prefixed so that no
-- two contents share a text.  The same content has the same digest.
local function content_digest(values, variants, rev)
  local v = variants or ''
  local parts = { 'hp1', tostring(rev), #v .. ':' .. v }
  for _, name in ipairs(sorted_keys(values)) do
    local raw = values[name]
    parts[#parts + 1] = #name .. ':' .. name .. '=' .. #raw .. ':' .. raw
  end
  return redis.sha1hex(table.concat(parts, '\n'))
end

local function damaged(ns, what)
  return redis.error_reply('HP_DAMAGED ' .. ns .. ': ' .. what .. '; nothing was written. '
    .. 'Restore the namespace from a worker\'s last good snapshot: hotparams restore '
    .. ns .. ' --from-cache FILE')
end

-- Version n read whole and checked: its values {field -> raw JSON}, its
-- variants (JSON text or nil), or nil, nil and an HP_DAMAGED
-- error when its hash is missing, lacks a field of its schema revision, or
-- no longer matches its digest (a partial loss: eviction, a stray HDEL);
-- `complete_only`: the hash and its fields only (the digest is not checked).
local function intact_version(ns, meta, n, flat, complete_only)
  flat = flat or redis.call('HGETALL', key_of(ns, 'v:' .. n))
  if #flat == 0 then
    return nil, nil, damaged(ns, 'the hash of version ' .. n .. ' (' .. key_of(ns, 'v:' .. n)
      .. ') is missing although the meta says it is current')
  end
  local values, at = {}, {}
  for i = 1, #flat, 2 do
    if flat[i]:sub(1, 1) == '@' then at[flat[i]] = flat[i + 1] else values[flat[i]] = flat[i + 1] end
  end
  local rules = load_rules(ns, at['@schema'] or meta.schema_rev)
  if rules then
    local missing = {}
    for _, name in ipairs(sorted_keys(rules.fields)) do
      if values[name] == nil then missing[#missing + 1] = name end
    end
    if #missing > 0 then
      return nil, nil, damaged(ns, 'version ' .. n .. ' lacks the field(s) '
        .. table.concat(missing, ', '))
    end
  end
  local digest = at['@digest']
  if digest and not complete_only and digest ~= content_digest(values, at['@variants'], at['@schema'] or '') then
    return nil, nil, damaged(ns, 'version ' .. n .. ' no longer matches its digest')
  end
  return values, at['@variants'], nil
end

-- A write on a namespace whose meta is missing: HP_DAMAGED when its schema
-- is still there (only part of it was lost), else the HP_NONS reply.
local function missing_meta(ns, err)
  if redis.call('EXISTS', key_of(ns, 'schema')) == 1 then
    return damaged(ns, 'its meta (' .. key_of(ns, 'meta') .. ') is missing while its schema '
      .. 'and versions remain')
  end
  return err
end

-- Values of version n as {field -> raw JSON}, or nil when not retained.
local function load_values(ns, n)
  local flat = redis.call('HGETALL', key_of(ns, 'v:' .. n))
  if #flat == 0 then return nil end
  local values = {}
  for i = 1, #flat, 2 do
    if flat[i]:sub(1, 1) ~= '@' then values[flat[i]] = flat[i + 1] end
  end
  return values
end

-- The variants of version n (JSON text) or nil.
local function load_variants(ns, n)
  local text = redis.call('HGET', key_of(ns, 'v:' .. n), '@variants')
  if not text then return nil end
  return text
end


-- The version an earlier attempt of this request (opts.rid) committed, or
-- nil: a retry after a lost reply answers it instead of writing again.
-- Only committed writes are recorded (a refusal writes nothing, so its
-- retry is simply evaluated again).
local function replayed(ns, opts)
  if opts.rid == nil then return nil end
  local v = redis.call('HGET', key_of(ns, 'rids'), opts.rid)
  if not v then return nil end
  return tonumber(v)
end

local function check_expect(meta, opts)
  if opts.expect ~= nil and tonumber(opts.expect) ~= meta.version then
    return redis.error_reply('HP_CONFLICT ' .. opts.expect .. ' ' .. meta.version
      .. ' (expected version ' .. opts.expect .. ', current is ' .. meta.version .. ')')
  end
  if opts.base ~= nil and tonumber(opts.base) ~= meta.version then
    return redis.error_reply('HP_STALE ' .. meta.version)
  end
  return nil
end

-- Validate the fields of `new` named in `names` against `rules`
-- (`raw_writer`: refuse Python-only fields, see check_value).
local function check_fields(rules, new, names, max_bytes, raw_writer)
  local problems = {}
  for _, name in ipairs(names) do
    local rule = rules.fields[name]
    if not rule then
      problems[#problems + 1] = { name, 'unknown field' }
    else
      local reason = check_value(rule, new[name], max_bytes, raw_writer)
      if reason then problems[#problems + 1] = { name, reason } end
    end
  end
  if #problems > 0 then return invalid(problems) end
  return nil
end

-- Fill fields missing from `values` with their defaults; report required ones.
local function fill_defaults(rules, values)
  local problems = {}
  for _, name in ipairs(sorted_keys(rules.fields)) do
    if values[name] == nil then
      local default = rules.fields[name].default
      if default == nil then
        problems[#problems + 1] = { name, 'required (the field has no default)' }
      else
        values[name] = default
      end
    end
  end
  if #problems > 0 then return invalid(problems) end
  return nil
end
