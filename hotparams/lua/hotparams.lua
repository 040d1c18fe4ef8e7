#!lua name=hotparams
--[[
hotparams: the one write path of a parameter store.

Every writer (the Python API, the CLI, the web admin, a person at
redis-cli) goes through these functions, so every change is checked,
versioned, audited and published atomically.  Redis does not roll a
function back when it fails half-way, so every function does ALL of its
checks before its first write.

Calling convention (all functions)
  KEYS[1]  the namespace name, e.g. "chat".  Every key the function touches
           is "hp:{<namespace>}:...", which hashes to the same cluster slot
           as the bare name, so KEYS[1] routes the call to the right node.
  ARGV     field/value pairs, then options written as "@name value" pairs
           (field names are identifiers, so "@" can never start one).

Keys of a namespace (see the README's "Implementation" section)
  hp:{ns}:meta      hash   version, epoch, ts, schema_rev, oldest, created,
                           retention, audit_maxlen, max_value_bytes
  hp:{ns}:v:<n>     hash   the complete values of version n (field -> JSON
                           text) plus "@ts" (commit ms), "@schema" (rev) and,
                           with A/B variants, "@variants" (JSON)
  hp:{ns}:schema    hash   schema revision -> validation rules (JSON)
  hp:{ns}:audit     stream one entry per change
  hp:{ns}:events    channel one message per change

Errors are error replies whose first word is a stable code:
  HP_BADARG   malformed call (namespace name, option, argument count)
  HP_NONS     the namespace does not exist
  HP_NOVERSION the version asked for is not retained
  HP_CONFLICT <expected> <actual>   failed compare-and-set
  HP_STALE <actual>                 internal: the caller validated against
                                    an older version and must retry
  HP_INVALID <field>: <reason>[; <field>: <reason>]...
]]

-- replaced at load time by a digest of this file, so a changed library is
-- always reloaded (hotparams/library.py)
local LIBVERSION = 'dev'
local MASK = '******'
local MAX_NAMESPACE = 64
local DEFAULT_RETENTION = 100
local DEFAULT_AUDIT_MAXLEN = 10000
local DEFAULT_MAX_VALUE_BYTES = 65536
local MAX_SAFE_INT = 9007199254740992 -- 2^53: exact in every JSON reader

-- ------------------------------------------------------------------ keys

local function check_namespace(ns)
  if type(ns) ~= 'string' or #ns == 0 or #ns > MAX_NAMESPACE
      or not ns:match('^[%w][%w_%.%-]*$') then
    return redis.error_reply('HP_BADARG namespace: must be 1-64 characters of '
      .. 'letters, digits, "_", "." or "-", starting with a letter or digit')
  end
  return nil
end

local function key_of(ns, suffix)
  return 'hp:{' .. ns .. '}:' .. suffix
end

-- ------------------------------------------------------------------ strict JSON

local function is_json_number(tok)
  if tok:match('^%-?0%d') then return false end
  return tok:match('^%-?%d+$') ~= nil
    or tok:match('^%-?%d+%.%d+$') ~= nil
    or tok:match('^%-?%d+[eE][%+%-]?%d+$') ~= nil
    or tok:match('^%-?%d+%.%d+[eE][%+%-]?%d+$') ~= nil
end

-- Replace every string literal by "" so the bare tokens can be checked.
-- Returns nil on a malformed string: unterminated, a raw control character,
-- a bad escape, or a lone UTF-16 surrogate (which no JSON decoder accepts).
local function strip_strings(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local q = s:find('"', i, true)
    if not q then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, q - 1)
    local j = q + 1
    local high = false -- a high surrogate waits for its low half
    while true do
      local c = s:find('[%z\1-\31"\\]', j)
      if not c or (high and c ~= j) then return nil end
      local ch = s:sub(c, c)
      if ch == '"' then
        if high then return nil end
        j = c + 1
        break
      elseif ch ~= '\\' then
        return nil
      end
      local e = s:sub(c + 1, c + 1)
      if e == 'u' then
        local hex = s:sub(c + 2, c + 5)
        if not hex:match('^%x%x%x%x$') then return nil end
        local code = tonumber(hex, 16)
        if code >= 0xD800 and code <= 0xDBFF then
          if high then return nil end
          high = true
        elseif code >= 0xDC00 and code <= 0xDFFF then
          if not high then return nil end
          high = false
        elseif high then
          return nil
        end
        j = c + 6
      elseif e ~= '' and ('"\\/bfnrt'):find(e, 1, true) then
        if high then return nil end
        j = c + 2
      else
        return nil
      end
    end
    out[#out + 1] = '""'
    i = j
  end
  return table.concat(out)
end

-- cjson accepts NaN, Infinity and hex numbers; JSON (and every worker) does not.
local function is_strict_json(s)
  local bare = strip_strings(s)
  if not bare then return false end
  for tok in bare:gmatch('[^%s%[%]{},:"]+') do
    if tok ~= 'true' and tok ~= 'false' and tok ~= 'null' and not is_json_number(tok) then
      return false
    end
  end
  return true
end

local function all_finite(v)
  local t = type(v)
  if t == 'number' then
    return v == v and v ~= math.huge and v ~= -math.huge
  elseif t == 'table' then
    for _, item in pairs(v) do
      if not all_finite(item) then return false end
    end
  end
  return true
end

local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local extra
    if c < 0x80 then extra = 0
    elseif c >= 0xC2 and c <= 0xDF then extra = 1
    elseif c >= 0xE0 and c <= 0xEF then extra = 2
    elseif c >= 0xF0 and c <= 0xF4 then extra = 3
    else return false end
    for k = 1, extra do
      local b = s:byte(i + k)
      if not b or b < 0x80 or b > 0xBF then return false end
    end
    i = i + extra + 1
  end
  return true
end

local function utf8_len(s)
  local _, count = s:gsub('[^\128-\191]', '')
  return count
end

-- ------------------------------------------------------------------ validation

-- The JSON type of a decoded value ("integer" also counts as "number").
local function json_type(raw, v)
  if v == cjson.null then return 'null' end
  local t = type(v)
  if t == 'boolean' then return 'boolean' end
  if t == 'string' then return 'string' end
  if t == 'number' then
    if raw:match('^%s*%-?%d+%s*$') then return 'integer' end
    if v == math.floor(v) and not raw:find('[eE]') then return 'integer' end
    return 'number'
  end
  if t == 'table' then
    if raw:match('^%s*%[') then return 'array' end
    return 'object'
  end
  return 'unknown'
end

local function type_allowed(types, jt, v)
  for _, allowed in ipairs(types) do
    if allowed == 'any' or allowed == jt then return true end
    if allowed == 'number' and jt == 'integer' then return true end
    if allowed == 'integer' and jt == 'number' and v == math.floor(v) then return true end
  end
  return false
end

local function show(v, secret)
  if secret then return MASK end
  if type(v) == 'number' then return tostring(v) end
  return nil
end

local function clause(prefix, v, secret)
  local shown = show(v, secret)
  if shown then return prefix .. ' (got ' .. shown .. ')' end
  return prefix
end

-- Check one value against one field rule; returns nil or a reason.
local function check_value(rule, raw, max_bytes)
  if #raw > max_bytes then
    return 'value is ' .. #raw .. ' bytes, more than the limit of ' .. max_bytes
  end
  if not is_strict_json(raw) then return 'not valid JSON' end
  local ok, v = pcall(cjson.decode, raw)
  if not ok then return 'not valid JSON' end
  if not all_finite(v) then return 'numbers must be finite' end
  local jt = json_type(raw, v)
  local types = rule.types or { 'any' }
  if not type_allowed(types, jt, v) then
    return 'expected ' .. table.concat(types, ' or ') .. ', got ' .. jt
  end
  if jt == 'null' then return nil end
  local secret = rule.secret
  if rule.enum then
    local found = false
    for _, e in ipairs(rule.enum) do
      if e == v then found = true break end
    end
    if not found then
      local names = {}
      for _, e in ipairs(rule.enum) do names[#names + 1] = cjson.encode(e) end
      return 'must be one of ' .. table.concat(names, ', ')
    end
  end
  if jt == 'number' or jt == 'integer' then
    if (jt == 'integer' or not type_allowed(types, 'number', 0.5)) and math.abs(v) > MAX_SAFE_INT then
      return 'integers must be between -2^53 and 2^53'
    end
    if rule.min ~= nil and v < rule.min then return clause('must be >= ' .. rule.min, v, secret) end
    if rule.max ~= nil and v > rule.max then return clause('must be <= ' .. rule.max, v, secret) end
    if rule.xmin ~= nil and v <= rule.xmin then return clause('must be > ' .. rule.xmin, v, secret) end
    if rule.xmax ~= nil and v >= rule.xmax then return clause('must be < ' .. rule.xmax, v, secret) end
    if rule.multiple ~= nil and rule.multiple > 0 then
      local q = v / rule.multiple
      if math.abs(q - math.floor(q + 0.5)) > 1e-9 then
        return clause('must be a multiple of ' .. rule.multiple, v, secret)
      end
    end
  elseif jt == 'string' then
    if not valid_utf8(v) then return 'not valid UTF-8' end
    local len = utf8_len(v)
    if rule.minlen ~= nil and len < rule.minlen then
      return 'must be at least ' .. rule.minlen .. ' characters (got ' .. len .. ')'
    end
    if rule.maxlen ~= nil and len > rule.maxlen then
      return 'must be at most ' .. rule.maxlen .. ' characters (got ' .. len .. ')'
    end
  elseif jt == 'array' then
    local count = #v
    if rule.minitems ~= nil and count < rule.minitems then
      return 'must have at least ' .. rule.minitems .. ' items (got ' .. count .. ')'
    end
    if rule.maxitems ~= nil and count > rule.maxitems then
      return 'must have at most ' .. rule.maxitems .. ' items (got ' .. count .. ')'
    end
    if rule.items then
      for i, item in ipairs(v) do
        local it = json_type(cjson.encode(item), item)
        if not type_allowed(rule.items, it, item) then
          return 'item ' .. i .. ' must be ' .. table.concat(rule.items, ' or ') .. ', got ' .. it
        end
      end
    end
  end
  return nil
end

local function invalid(problems)
  local parts = {}
  for _, p in ipairs(problems) do parts[#parts + 1] = p[1] .. ': ' .. p[2] end
  return redis.error_reply('HP_INVALID ' .. table.concat(parts, '; '))
end

-- ------------------------------------------------------------------ arguments

-- Split ARGV (from index `first`) into field/value pairs and @options.
local function parse_args(argv, first)
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
      if opt == 'unset' then
        unset[#unset + 1] = value
      elseif opt == 'expect' or opt == 'base' or opt == 'author' or opt == 'reason'
          or opt == 'source' or opt == 'replace' or opt == 'op' or opt == 'variants' then
        opts[opt] = value
      else
        return nil, redis.error_reply('HP_BADARG unknown option ' .. name
          .. ' (known: @expect @author @reason @source)')
      end
    else
      fields[#fields + 1] = { name, value }
    end
    i = i + 2
  end
  for _, name in ipairs({ 'expect', 'base' }) do
    if opts[name] ~= nil and not opts[name]:match('^%d+$') then
      return nil, redis.error_reply('HP_BADARG @' .. name .. ' must be a version number')
    end
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
    return nil, redis.error_reply('HP_NONS namespace ' .. ns
      .. ' does not exist (register it first)')
  end
  return meta, nil
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

local function sorted_keys(t)
  local names = {}
  for name in pairs(t) do names[#names + 1] = name end
  table.sort(names)
  return names
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

-- Validate the fields of `new` named in `names` against `rules`.
local function check_fields(rules, new, names, max_bytes)
  local problems = {}
  for _, name in ipairs(names) do
    local rule = rules.fields[name]
    if not rule then
      problems[#problems + 1] = { name, 'unknown field' }
    else
      local reason = check_value(rule, new[name], max_bytes)
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

-- ------------------------------------------------------------------ variants

local BUCKETS = 10000
local MAX_VARIANTS_BYTES = 1048576

local function is_array(t)
  return type(t) == 'table' and (next(t) == nil or t[1] ~= nil)
end

-- Check the variants document (see hotparams/variants.py); returns nil or
-- an error reply.  Overrides obey the field rules; bucket ranges of all
-- variants are disjoint; a user is on one allow-list at most.
local function check_variants(rules, text, max_bytes)
  local function bad(msg) return redis.error_reply('HP_INVALID @variants: ' .. msg) end
  if #text > MAX_VARIANTS_BYTES then return bad('larger than 1 MiB') end
  if not is_strict_json(text) then return bad('not valid JSON') end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= 'table' or type(doc.variants) ~= 'table'
      or type(doc.salt) ~= 'string' or #doc.salt == 0 then
    return bad('must be {"salt": "...", "variants": {...}}')
  end
  local problems, spans, owner = {}, {}, {}
  for _, name in ipairs(sorted_keys(doc.variants)) do
    local spec = doc.variants[name]
    if type(name) ~= 'string' or #name > 64 or not name:match('^[%w][%w_%.%-]*$') then
      return bad('variant name ' .. cjson.encode(name) .. ' is not valid')
    end
    if type(spec) ~= 'table' then return bad('variant ' .. name .. ' must be an object') end
    local overrides = spec.overrides or {}
    if type(overrides) ~= 'table' or (next(overrides) ~= nil and overrides[1] ~= nil) then
      return bad('variant ' .. name .. ': overrides must be an object')
    end
    for _, field in ipairs(sorted_keys(overrides)) do
      local rule = rules.fields[field]
      local label = 'variant ' .. name .. ' ' .. field
      if not rule then
        problems[#problems + 1] = { label, 'unknown field' }
      else
        local reason = check_value(rule, cjson.encode(overrides[field]), max_bytes)
        if reason then problems[#problems + 1] = { label, reason } end
      end
    end
    local buckets = spec.buckets or {}
    if not is_array(buckets) then return bad('variant ' .. name .. ': buckets must be a list') end
    for _, r in ipairs(buckets) do
      if not is_array(r) or #r ~= 2 or type(r[1]) ~= 'number' or type(r[2]) ~= 'number'
          or r[1] ~= math.floor(r[1]) or r[2] ~= math.floor(r[2])
          or r[1] < 0 or r[2] > BUCKETS or r[1] >= r[2] then
        return bad('variant ' .. name .. ': buckets must be [start, end) ranges within 0-'
          .. BUCKETS)
      end
      spans[#spans + 1] = { r[1], r[2], name }
    end
    local users = spec.users or {}
    if not is_array(users) then return bad('variant ' .. name .. ': users must be a list') end
    for _, user in ipairs(users) do
      if type(user) ~= 'string' then
        return bad('variant ' .. name .. ': user ids must be strings')
      end
      if owner[user] and owner[user] ~= name then
        return bad('user ' .. cjson.encode(user) .. ' is on the allow-lists of '
          .. owner[user] .. ' and ' .. name)
      end
      owner[user] = name
    end
  end
  table.sort(spans, function(a, b) return a[1] < b[1] end)
  for i = 2, #spans do
    if spans[i][1] < spans[i - 1][2] then
      return bad('the buckets of ' .. spans[i - 1][3] .. ' and ' .. spans[i][3] .. ' overlap')
    end
  end
  if #problems > 0 then return invalid(problems) end
  return nil
end

-- The variants document with secret override values masked (for the audit);
-- also tells whether it held any secret.
local function masked_variants(rules, text)
  local doc = cjson.decode(text)
  local secret = false
  for _, spec in pairs(doc.variants) do
    for field in pairs(spec.overrides or {}) do
      if rules.fields[field] and rules.fields[field].secret then
        spec.overrides[field] = MASK
        secret = true
      end
    end
    -- cjson writes an empty list as {}: leave empty lists out instead
    if spec.users and next(spec.users) == nil then spec.users = nil end
    if spec.buckets and next(spec.buckets) == nil then spec.buckets = nil end
  end
  if not secret then return text, false end
  return cjson.encode(doc), true
end

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

-- Write `new` (complete values) as the next version; everything has been
-- checked by the caller.  Returns the new version, or the current one when
-- nothing changed.
local function write_version(ns, meta, rules, rev, old, new, op, opts, extra_audit,
                             vold, vnew)
  local changed, removed = diff(old, new)
  local variants_changed = vold ~= vnew
  if #changed == 0 and #removed == 0 and not variants_changed and op ~= 'init' then
    return meta.version
  end
  local prev = meta.version or 0
  local v = prev + 1
  local ts = now_ms()

  local hash = { '@ts', tostring(ts), '@schema', tostring(rev) }
  if vnew then
    hash[#hash + 1] = '@variants'
    hash[#hash + 1] = vnew
  end
  for name, raw in pairs(new) do
    hash[#hash + 1] = name
    hash[#hash + 1] = raw
  end
  redis.call('HSET', key_of(ns, 'v:' .. v), unpack(hash))

  local oldest = meta.oldest or v
  local retention = meta.retention
  while oldest <= v - retention do
    redis.call('DEL', key_of(ns, 'v:' .. oldest))
    oldest = oldest + 1
  end
  redis.call('HSET', key_of(ns, 'meta'), 'version', v, 'ts', ts, 'schema_rev', rev,
    'oldest', oldest)

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
    end
    audit_parts[#audit_parts + 1] = cjson.encode(name) .. ':[' .. before .. ',' .. after .. ']'
  end
  for _, name in ipairs(removed) do
    local before = old[name]
    if is_secret(rules, name) then before = cjson.encode(MASK) end
    audit_parts[#audit_parts + 1] = cjson.encode(name) .. ':[' .. before .. ',null]'
  end
  local changes_json = '{' .. table.concat(audit_parts, ',') .. '}'
  local entry = {
    'v', tostring(v), 'prev', tostring(prev), 'op', op,
    'author', opts.author or '', 'reason', opts.reason or '',
    'source', opts.source or 'redis', 'ts', tostring(ts),
    'schema', tostring(rev), 'changes', changes_json,
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
    entry[#entry + 1] = shown
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
    .. ',"changed":{' .. table.concat(event_parts, ',') .. '}'
    .. ',"removed":[' .. table.concat(removed_json, ',') .. ']'
    .. ',"redacted":[' .. table.concat(redacted, ',') .. ']'
    .. variants_event .. '}'
  redis.call('PUBLISH', key_of(ns, 'events'), event)
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

-- ------------------------------------------------------------------ functions

local function hp_libversion()
  return LIBVERSION
end

--[[ hp_register
KEYS[1] namespace
ARGV[1] validation rules (canonical JSON; compared as text for idempotence)
ARGV[2] options (JSON object): epoch (new history id), author, reason,
        source, retention, audit_maxlen, max_value_bytes
ARGV[3..] field, JSON value pairs: the initial values of a new namespace
Returns {version, schema_rev, created (0/1), new_revision (0/1)}
]]
local function hp_register(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local ok, rules = pcall(cjson.decode, argv[1] or '')
  if not ok or type(rules) ~= 'table' or type(rules.fields) ~= 'table' then
    return redis.error_reply('HP_BADARG rules must be a JSON object with "fields"')
  end
  local ok2, opts = pcall(cjson.decode, argv[2] or '{}')
  if not ok2 or type(opts) ~= 'table' then
    return redis.error_reply('HP_BADARG options must be a JSON object')
  end
  local settings = {}
  for _, name in ipairs({ 'retention', 'audit_maxlen', 'max_value_bytes' }) do
    local n, e = positive_int(opts[name], name)
    if e then return e end
    settings[name] = n
  end
  local initial = {}
  if (#argv - 2) % 2 ~= 0 then
    return redis.error_reply('HP_BADARG initial values must be field/value pairs')
  end
  for i = 3, #argv, 2 do initial[argv[i]] = argv[i + 1] end
  local wopts = { author = opts.author, reason = opts.reason, source = opts.source }

  local meta = load_meta(ns)
  if not meta then
    if type(opts.epoch) ~= 'string' or #opts.epoch == 0 then
      return redis.error_reply('HP_BADARG options.epoch is required for a new namespace')
    end
    local max_bytes = settings.max_value_bytes or DEFAULT_MAX_VALUE_BYTES
    err = fill_defaults(rules, initial)
    if err then return err end
    err = check_fields(rules, initial, sorted_keys(initial), max_bytes)
    if err then return err end
    local created = now_ms()
    redis.call('HSET', key_of(ns, 'schema'), '1', argv[1])
    redis.call('HSET', key_of(ns, 'meta'), 'epoch', opts.epoch, 'created', created,
      'retention', settings.retention or DEFAULT_RETENTION,
      'audit_maxlen', settings.audit_maxlen or DEFAULT_AUDIT_MAXLEN,
      'max_value_bytes', max_bytes)
    meta = load_meta(ns)
    meta.version = 0
    local v = write_version(ns, meta, rules, 1, {}, initial, 'init', wopts, nil, nil, nil)
    return { v, 1, 1, 1 }
  end

  -- existing namespace: same rules => nothing to do but settings
  local rev = meta.schema_rev
  local current = redis.call('HGET', key_of(ns, 'schema'), tostring(rev))
  local old = load_values(ns, meta.version) or {}
  local variants = load_variants(ns, meta.version)
  local max_bytes = settings.max_value_bytes or meta.max_value_bytes
  local new, new_rev = old, rev
  if current ~= argv[1] then
    -- a new schema revision: keep known fields, add defaults for new ones
    new = {}
    for name, raw in pairs(old) do
      if rules.fields[name] then new[name] = raw end
    end
    err = fill_defaults(rules, new)
    if err then return err end
    err = check_fields(rules, new, sorted_keys(new), max_bytes)
    if err then return err end
    if variants then
      err = check_variants(rules, variants, max_bytes)
      if err then return err end
    end
    new_rev = rev + 1
  end
  -- all checks done: write
  local updates = {}
  for name, value in pairs(settings) do
    updates[#updates + 1] = name
    updates[#updates + 1] = value
    meta[name] = value
  end
  if #updates > 0 then redis.call('HSET', key_of(ns, 'meta'), unpack(updates)) end
  if new_rev == rev then return { meta.version, rev, 0, 0 } end
  redis.call('HSET', key_of(ns, 'schema'), tostring(new_rev), argv[1])
  local v = write_version(ns, meta, rules, new_rev, old, new, 'schema', wopts, nil,
    variants, variants)
  if v == meta.version then
    redis.call('HSET', key_of(ns, 'meta'), 'schema_rev', new_rev)
  end
  return { v, new_rev, 0, 1 }
end

-- The shared body of hp_commit and hp_set.  `raw_strings`: values of
-- string-typed fields are taken as plain text (the redis-cli convenience).
local function change(ns, args, raw_strings)
  local meta, err = require_meta(ns)
  if err then return err end
  local opts = args.opts
  err = check_expect(meta, opts)
  if err then return err end
  local rev = meta.schema_rev
  local rules = load_rules(ns, rev)
  local old = load_values(ns, meta.version) or {}
  local vold = load_variants(ns, meta.version)
  local vnew = vold
  if opts.variants ~= nil then
    vnew = opts.variants
    if vnew == '' then vnew = nil end
  end
  local new, names = {}, {}
  local replace = opts.replace == '1'
  if not replace then
    for name, raw in pairs(old) do new[name] = raw end
  end
  local problems = {}
  for _, pair in ipairs(args.fields) do
    local name, value = pair[1], pair[2]
    local rule = rules.fields[name]
    if rule and raw_strings then
      local takes_string = false
      for _, t in ipairs(rule.types or {}) do
        if t == 'string' then takes_string = true end
      end
      -- a value that is not JSON is plain text for a string field
      if takes_string and not (value == 'null' and #rule.types > 1) then
        local quoted = value:sub(1, 1) == '"' and is_strict_json(value)
          and pcall(cjson.decode, value)
        if not quoted then
          if not valid_utf8(value) then
            problems[#problems + 1] = { name, 'not valid UTF-8' }
            value = '""'
          else
            value = cjson.encode(value)
          end
        end
      end
    end
    new[name] = value
    names[#names + 1] = name
  end
  for _, name in ipairs(args.unset) do
    local rule = rules.fields[name]
    if not rule then
      problems[#problems + 1] = { name, 'unknown field' }
    elseif rule.default == nil then
      problems[#problems + 1] = { name, 'cannot be unset (the field has no default)' }
    else
      new[name] = rule.default
    end
  end
  if #problems > 0 then return invalid(problems) end
  if replace then
    err = fill_defaults(rules, new)
    if err then return err end
  end
  err = check_fields(rules, new, names, meta.max_value_bytes)
  if err then return err end
  if vnew and vnew ~= vold then
    err = check_variants(rules, vnew, meta.max_value_bytes)
    if err then return err end
  end
  local op = opts.op or (#names == 0 and #args.unset > 0 and 'unset' or 'set')
  if op ~= 'set' and op ~= 'unset' and op ~= 'restore' and op ~= 'variant' then
    return redis.error_reply('HP_BADARG @op must be set, unset, restore or variant')
  end
  return write_version(ns, meta, rules, rev, old, new, op, opts, nil, vold, vnew)
end

--[[ hp_commit (the Python API's write)
KEYS[1] namespace
ARGV    field, JSON value pairs, then options:
        @expect N   fail with HP_CONFLICT unless the current version is N
        @base N     internal: the version the caller validated against
        @unset F    reset field F to its default (repeatable)
        @replace 1  the given values are the whole state (others: defaults)
        @op OP      set | unset | restore | variant (audit label)
        @variants J the whole A/B variants document (JSON; "" removes all),
                    see hotparams/variants.py
        @author A  @reason R  @source S
Returns the new version (the current one when nothing changed)
]]
local function hp_commit(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local args
  args, err = parse_args(argv, 1)
  if err then return err end
  return change(ns, args, false)
end

--[[ hp_set (quick edits from redis-cli)
KEYS[1] namespace
ARGV    field value [field value ...] [@expect N] [@author A] [@reason R]
        A value of a string field is taken as plain text; other values are
        JSON (0.9, 42, true, ["a","b"], null).
Returns the new version (the current one when nothing changed)
]]
local function hp_set(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local args
  args, err = parse_args(argv, 1)
  if err then return err end
  if #args.fields == 0 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_set 1 <namespace> <field> <value> ...')
  end
  if args.opts.source == nil then args.opts.source = 'redis-cli' end
  return change(ns, args, true)
end

--[[ hp_unset
KEYS[1] namespace
ARGV    field [field ...] [@expect N] [@author A] [@reason R]
Returns the new version (the current one when nothing changed)
]]
local function hp_unset(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local names, rest = {}, {}
  local i = 1
  while i <= #argv do
    if argv[i]:sub(1, 1) == '@' then
      rest[#rest + 1] = argv[i]
      rest[#rest + 1] = argv[i + 1] or ''
      i = i + 2
    else
      names[#names + 1] = argv[i]
      i = i + 1
    end
  end
  if #names == 0 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_unset 1 <namespace> <field> ...')
  end
  local args
  args, err = parse_args(rest, 1)
  if err then return err end
  args.unset = names
  if args.opts.source == nil then args.opts.source = 'redis-cli' end
  args.opts.op = 'unset'
  return change(ns, args, false)
end

--[[ hp_rollback
KEYS[1] namespace
ARGV[1] the version whose values become current again (must be retained)
ARGV[2..] options: @expect N @author A @reason R @source S
Returns the new version: a rollback never rewrites history
]]
local function hp_rollback(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local target = argv[1]
  if not target or not target:match('^%d+$') then
    return redis.error_reply('HP_BADARG usage: FCALL hp_rollback 1 <namespace> <version>')
  end
  local args
  args, err = parse_args(argv, 2)
  if err then return err end
  local meta
  meta, err = require_meta(ns)
  if err then return err end
  err = check_expect(meta, args.opts)
  if err then return err end
  local values = load_values(ns, target)
  if not values then
    return redis.error_reply('HP_NOVERSION version ' .. target .. ' of ' .. ns
      .. ' is not retained (oldest is ' .. tostring(meta.oldest) .. ', current is '
      .. meta.version .. ')')
  end
  local rev = meta.schema_rev
  local rules = load_rules(ns, rev)
  local new = {}
  for name, raw in pairs(values) do
    if rules.fields[name] then new[name] = raw end
  end
  err = fill_defaults(rules, new)
  if err then return err end
  err = check_fields(rules, new, sorted_keys(new), meta.max_value_bytes)
  if err then return err end
  local vtarget = load_variants(ns, target)
  if vtarget then
    err = check_variants(rules, vtarget, meta.max_value_bytes)
    if err then return err end
  end
  local old = load_values(ns, meta.version) or {}
  if args.opts.source == nil then args.opts.source = 'redis-cli' end
  return write_version(ns, meta, rules, rev, old, new, 'rollback', args.opts,
    { { 'target', target } }, load_variants(ns, meta.version), vtarget)
end

--[[ hp_get (read-only)
KEYS[1] namespace
ARGV[1] optional version (default: the current one)
Returns {version, epoch, commit ms, schema_rev, field, JSON value, ...}
]]
local function hp_get(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local meta
  meta, err = require_meta(ns)
  if err then return err end
  local v = meta.version
  if argv[1] and argv[1] ~= '' then
    if not argv[1]:match('^%d+$') then
      return redis.error_reply('HP_BADARG version must be a number')
    end
    v = tonumber(argv[1])
  end
  local flat = redis.call('HGETALL', key_of(ns, 'v:' .. v))
  if #flat == 0 then
    return redis.error_reply('HP_NOVERSION version ' .. v .. ' of ' .. ns
      .. ' is not retained (oldest is ' .. tostring(meta.oldest) .. ', current is '
      .. meta.version .. ')')
  end
  local out = { v, meta.epoch, '0', '0' }
  for i = 1, #flat, 2 do
    local name = flat[i]
    if name == '@ts' then out[3] = flat[i + 1]
    elseif name == '@schema' then out[4] = flat[i + 1]
    else
      out[#out + 1] = name
      out[#out + 1] = flat[i + 1]
    end
  end
  return out
end

--[[ hp_head (read-only; the cheap reconcile probe)
KEYS[1] namespace
Returns {version, epoch, commit ms, schema_rev}
]]
local function hp_head(keys)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local meta
  meta, err = require_meta(ns)
  if err then return err end
  return { meta.version, meta.epoch, meta.ts or '0', meta.schema_rev }
end

--[[ hp_show (read-only; for people at redis-cli)
KEYS[1] namespace
Returns one JSON document: namespace, version, epoch, committed (ms) and
values, secret values masked
]]
local function hp_show(keys)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local meta
  meta, err = require_meta(ns)
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
    count, err = positive_int(argv[1], 'count')
    if err then return err end
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

redis.register_function { function_name = 'hp_libversion', callback = hp_libversion,
  flags = { 'no-writes', 'allow-stale' } }
redis.register_function('hp_register', hp_register)
redis.register_function('hp_commit', hp_commit)
redis.register_function('hp_set', hp_set)
redis.register_function('hp_unset', hp_unset)
redis.register_function('hp_rollback', hp_rollback)
redis.register_function { function_name = 'hp_get', callback = hp_get, flags = { 'no-writes' } }
redis.register_function { function_name = 'hp_head', callback = hp_head, flags = { 'no-writes' } }
redis.register_function { function_name = 'hp_show', callback = hp_show, flags = { 'no-writes' } }
redis.register_function { function_name = 'hp_history', callback = hp_history,
  flags = { 'no-writes' } }
