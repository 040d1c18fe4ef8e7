-- writes.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); the functions that change
-- a namespace.

-- ------------------------------------------------------------------ functions

local function hp_libversion()
  return LIBVERSION
end

--[[ hp_register
KEYS[1] namespace
ARGV[1] validation rules (canonical JSON), at most 1 MiB and 1000 fields
ARGV[2] options (JSON object): epoch (new history id), author, reason,
        source, base_rev (fail with HP_STALE unless the schema revision is
        still this); retention, audit_maxlen, max_value_bytes: settings
        that must hold (a new namespace gets them; an existing one with
        other settings is an HP_SETTINGS error: change them with
        hp_configure); defaults: {retention, ...} for a new namespace only
ARGV[3..] field, JSON value pairs: the initial values of a new namespace
Registering is monotone: for an existing namespace the rules must keep
every stored field with its stored rule (else HP_SCHEMA: drop, rename or
change a field with hp_migrate); new fields get their defaults.  The rules'
"model" (the class's name) is not part of the schema's identity.
Returns {version, schema_rev, created (0/1), new_revision (0/1)}
]]
local function hp_register(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local rules
  rules, err = decode_rules(argv[1])
  if err then return err end
  local opts
  opts, err = decode_options(argv[2] or '{}')
  if err then return err end
  local settings
  settings, err = settings_in(opts)
  if err then return err end
  local defaults
  defaults, err = settings_in(opts.defaults)
  if err then return err end
  if (#argv - 2) % 2 ~= 0 then
    return redis.error_reply('HP_BADARG initial values must be field/value pairs')
  end
  if (#argv - 2) / 2 > MAX_FIELDS then
    return redis.error_reply('HP_BADARG at most ' .. MAX_FIELDS .. ' initial values')
  end
  local initial = {}
  for i = 3, #argv, 2 do initial[argv[i]] = argv[i + 1] end
  local wopts = { author = opts.author, reason = opts.reason, source = opts.source }

  local meta = load_meta(ns)
  if not meta then
    if type(opts.epoch) ~= 'string' or #opts.epoch == 0 or #opts.epoch > 64 then
      return redis.error_reply('HP_BADARG options.epoch (1-64 bytes) is required for a new namespace')
    end
    for _, name in ipairs(SETTINGS) do
      if settings[name] == nil then settings[name] = defaults[name] end
    end
    local max_bytes = settings.max_value_bytes or DEFAULT_MAX_VALUE_BYTES
    err = fill_defaults(rules, initial)
    if err then return err end
    err = check_fields(rules, initial, sorted_keys(initial), max_bytes)
    if err then return err end
    err = check_cross(rules, initial, nil)
    if err then return err end
    err = check_write_acl(ns, 1)
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

  -- an existing namespace: its settings change only with hp_configure
  local differ = {}
  for _, name in ipairs(SETTINGS) do
    if settings[name] ~= nil and settings[name] ~= meta[name] then
      differ[#differ + 1] = name .. ' is ' .. meta[name] .. ', not ' .. settings[name]
    end
  end
  if #differ > 0 then
    return redis.error_reply('HP_SETTINGS ' .. ns .. ': ' .. table.concat(differ, ', ')
      .. ' (registering never changes the settings of an existing namespace: '
      .. 'use hp_configure, bus.configure or hotparams configure)')
  end
  local rev = meta.schema_rev
  if opts.base_rev ~= nil and tonumber(opts.base_rev) ~= rev then
    return redis.error_reply('HP_STALE ' .. meta.version)
  end
  local current = redis.call('HGET', key_of(ns, 'schema'), tostring(rev))
  if current == argv[1] then return { meta.version, rev, 0, 0 } end
  local stored = load_rules(ns, rev)
  local missing, changed, added = compare_rules(stored, rules)
  if #missing > 0 or #changed > 0 then
    local parts = {}
    if #missing > 0 then parts[#parts + 1] = 'lacks ' .. table.concat(missing, ', ') end
    if #changed > 0 then
      parts[#parts + 1] = 'changes the rule of ' .. table.concat(changed, ', ')
    end
    return redis.error_reply('HP_SCHEMA ' .. ns .. ': the schema ' .. table.concat(parts, '; ')
      .. ' (registering never drops a stored field or changes its rule: use hp_migrate)')
  end
  if added == 0 then return { meta.version, rev, 0, 0 } end
  -- a new schema revision: new fields get their defaults, stored values stay
  local old, variants
  old, variants, err = intact_version(ns, meta, meta.version)
  if err then return err end
  local new, names = {}, {}
  for name, raw in pairs(old) do new[name] = raw end
  err = fill_defaults(rules, new)
  if err then return err end
  for name in pairs(new) do
    if old[name] == nil then names[#names + 1] = name end
  end
  table.sort(names)
  err = check_fields(rules, new, names, meta.max_value_bytes)
  if err then return err end
  err = check_cross(rules, new, variants)
  if err then return err end
  err = check_write_acl(ns, meta.version + 1)
  if err then return err end
  -- all checks done: write
  local new_rev = rev + 1
  redis.call('HSET', key_of(ns, 'schema'), tostring(new_rev), argv[1])
  local v = write_version(ns, meta, rules, new_rev, old, new, 'schema', wopts, nil,
    variants, variants)
  if v == meta.version then
    redis.call('HSET', key_of(ns, 'meta'), 'schema_rev', new_rev)
  end
  return { v, new_rev, 0, 1 }
end

-- Whether a write comes from a raw writer: one that did not validate the
-- new state with the pydantic model (no "@validated 1"), on a namespace
-- that does not allow raw writes.  Such a writer is refused on the fields
-- (and, for model validators, the namespace) only Python can check.
local function raw_writer(rules, opts)
  return opts.validated ~= '1' and rules.allow_raw_writes ~= true
end

-- The refusal of a raw write to a namespace whose model has validators
-- Lua cannot run (rules.py), or nil.
local function check_raw_namespace(rules, raw)
  if raw and rules.py then
    return redis.error_reply('HP_INVALID *: ' .. python_only('this namespace', rules.py))
  end
  return nil
end

-- The shared body of hp_commit and hp_set.  `raw_strings`: values of
-- string-typed fields are taken as plain text (the redis-cli convenience).
local function change(ns, args, raw_strings)
  local meta, err = require_meta(ns)
  if err then return missing_meta(ns, err) end
  local opts = args.opts
  -- sizes first: no per-byte work on a value that is too large
  local problems = {}
  for _, pair in ipairs(args.fields) do
    if #pair[2] > meta.max_value_bytes then
      problems[#problems + 1] = { pair[1], 'value is ' .. #pair[2]
        .. ' bytes, more than the limit of ' .. meta.max_value_bytes }
    end
  end
  if #problems > 0 then return invalid(problems) end
  if opts.variants ~= nil and #opts.variants > MAX_VARIANTS_BYTES then
    return redis.error_reply('HP_INVALID @variants: larger than 1 MiB')
  end
  local done = replayed(ns, opts)
  if done then return done end
  err = check_expect(meta, opts)
  if err then return err end
  local rev = meta.schema_rev
  local rules = load_rules(ns, rev)
  local raw = raw_writer(rules, opts)
  err = check_raw_namespace(rules, raw)
  if err then return err end
  local old, vold
  if opts.replace == '1' and opts.op == 'restore' then
    -- a restore replaces the whole state: a damaged base is what it repairs
    old, vold = load_values(ns, meta.version) or {}, load_variants(ns, meta.version)
  else
    old, vold, err = intact_version(ns, meta, meta.version)
    if err then return err end
  end
  local vnew = vold
  if opts.variants ~= nil then
    vnew = opts.variants
    if vnew == '' then vnew = nil end
  end
  local new, names = {}, {}
  local replace = opts.replace == '1'
  if not replace then
    for name, value in pairs(old) do new[name] = value end
  end
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
        local quoted = false
        if value:sub(1, 1) == '"' and valid_utf8(value) then
          local decoded = decode_json(value)
          quoted = type(decoded) == 'string'
        end
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
  err = check_fields(rules, new, names, meta.max_value_bytes, raw)
  if err then return err end
  if vnew and vnew ~= vold then
    err = check_variants(rules, vnew, meta.max_value_bytes, raw)
    if err then return err end
  end
  err = check_cross(rules, new, vnew)
  if err then return err end
  local op = opts.op or (#names == 0 and #args.unset > 0 and 'unset' or 'set')
  if op ~= 'set' and op ~= 'unset' and op ~= 'restore' and op ~= 'variant'
      and op ~= 'rotate' then
    return redis.error_reply('HP_BADARG @op must be set, unset, restore, variant or rotate')
  end
  if opts.check == '1' then return meta.version end  -- a dry run: every check, no write
  return write_version(ns, meta, rules, rev, old, new, op, opts, nil, vold, vnew)
end

--[[ hp_commit (the Python API's write)
KEYS[1] namespace
ARGV    field, JSON value pairs, then options:
        @expect N   fail with HP_CONFLICT unless the current version is N
        @base N     internal: the version the caller validated against
        @unset F    reset field F to its default (repeatable)
        @replace 1  the given values are the whole state (others: defaults)
        @op OP      set | unset | restore | variant | rotate (audit label)
        @variants J the whole A/B variants document (JSON; "" removes all),
                    see hotparams/variants.py
        @validated 1  the writer validated the whole new state with the
                    pydantic model (see "Raw writers" in hotparams.lua)
        @check 1    a dry run: every check of the change, nothing written
        @author A  @reason R  @source S
        @rid ID     the request's id: a retry answers the version it committed
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
        [@source S] [@rid ID] (no other option: see "Raw writers" in hotparams.lua).
        A value of a string field is taken as plain text; other values are
        JSON (0.9, 42, true, ["a","b"], null).
Returns the new version (the current one when nothing changed)
]]
local function hp_set(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local args
  args, err = parse_args(argv, 1, EDIT_OPTIONS)
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
      if argv[i + 1] == nil then
        return redis.error_reply('HP_BADARG option ' .. (valid_utf8(argv[i]) and #argv[i] <= 64
          and argv[i] or '') .. ' needs a value')
      end
      rest[#rest + 1] = argv[i]
      rest[#rest + 1] = argv[i + 1]
      i = i + 2
    else
      err = check_field_name(argv[i])
      if err then return err end
      names[#names + 1] = argv[i]
      i = i + 1
    end
  end
  if #names == 0 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_unset 1 <namespace> <field> ...')
  end
  local args
  args, err = parse_args(rest, 1, EDIT_OPTIONS)
  if err then return err end
  args.unset = names
  if args.opts.source == nil then args.opts.source = 'redis-cli' end
  args.opts.op = 'unset'
  return change(ns, args, false)
end

--[[ hp_rollback
KEYS[1] namespace
ARGV[1] the version whose values become current again (must be retained)
ARGV[2..] options: @expect N @author A @reason R @source S @rid ID, and
          @validated 1 (the caller validated the target's values with the model)
Returns the new version: a rollback never rewrites history
]]
local ROLLBACK_OPTIONS = { expect = true, author = true, reason = true, source = true,
  validated = true, rid = true }

local function hp_rollback(keys, argv)
  local ns = keys[1]
  local err = check_namespace(ns)
  if err then return err end
  local target = argv[1]
  if not target or not target:match('^%d+$') then
    return redis.error_reply('HP_BADARG usage: FCALL hp_rollback 1 <namespace> <version>')
  end
  local args
  args, err = parse_args(argv, 2, ROLLBACK_OPTIONS)
  if err then return err end
  if #args.fields > 0 then
    return redis.error_reply('HP_BADARG usage: FCALL hp_rollback 1 <namespace> <version> '
      .. '[@expect N] [@author A] [@reason R] [@source S]')
  end
  local meta
  meta, err = require_meta(ns)
  if err then return missing_meta(ns, err) end
  local done = replayed(ns, args.opts)
  if done then return done end
  err = check_expect(meta, args.opts)
  if err then return err end
  -- the whole state comes from the target: a damaged current version is
  -- what a rollback may repair (the target must be intact)
  local old, vold = load_values(ns, meta.version) or {}, load_variants(ns, meta.version)
  local n = tonumber(target)
  if n < (meta.oldest or 1) or n > meta.version
      or redis.call('EXISTS', key_of(ns, 'v:' .. n)) == 0 then
    return redis.error_reply('HP_NOVERSION version ' .. target .. ' of ' .. ns
      .. ' is not retained (oldest is ' .. tostring(meta.oldest) .. ', current is '
      .. meta.version .. ')')
  end
  local values, vtarget
  values, vtarget, err = intact_version(ns, meta, n)
  if err then return err end
  local rev = meta.schema_rev
  local rules = load_rules(ns, rev)
  local raw = raw_writer(rules, args.opts)
  err = check_raw_namespace(rules, raw)
  if err then return err end
  local new = {}
  for name, value in pairs(values) do
    if rules.fields[name] then new[name] = value end
  end
  err = fill_defaults(rules, new)
  if err then return err end
  err = check_fields(rules, new, sorted_keys(new), meta.max_value_bytes, raw)
  if err then return err end
  if vtarget then
    err = check_variants(rules, vtarget, meta.max_value_bytes, raw)
    if err then return err end
  end
  err = check_cross(rules, new, vtarget)
  if err then return err end
  if args.opts.source == nil then args.opts.source = 'redis-cli' end
  return write_version(ns, meta, rules, rev, old, new, 'rollback', args.opts,
    { { 'target', target } }, vold, vtarget)
end

redis.register_function { function_name = 'hp_libversion', callback = hp_libversion,
  flags = { 'no-writes', 'allow-stale' } }
redis.register_function('hp_register', hp_register)
redis.register_function('hp_commit', hp_commit)
redis.register_function('hp_set', hp_set)
redis.register_function('hp_unset', hp_unset)
redis.register_function('hp_rollback', hp_rollback)
