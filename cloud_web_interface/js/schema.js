// A small JSON Schema validator: the subset the gateway's pydantic schemas use
// (GET /api/schemas). Supported: $ref (local "#/..." pointers, $defs), type (also lists),
// enum, const, anyOf, oneOf, allOf, not; strings: minLength, maxLength, pattern;
// numbers: minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf;
// arrays: items, prefixItems, minItems, maxItems, uniqueItems; objects: properties,
// required, additionalProperties, patternProperties, propertyNames, minProperties,
// maxProperties. "format" and annotations are ignored.
//
// validate(schema, value) returns a list of {path, message, keyword}; path is dotted like
// the server's error fields ("port", "server_arguments.epochs", "tags.0"); "" is the root.

const TYPE_NAMES = {
  string: "text",
  integer: "a whole number",
  number: "a number",
  boolean: "true or false",
  object: "a set of name/value pairs",
  array: "a list",
  null: "empty",
};

const regexCache = new Map();

function compilePattern(pattern) {
  if (!regexCache.has(pattern)) {
    let regex = null;
    for (const flags of ["u", ""]) {
      try {
        regex = new RegExp(pattern, flags);
        break;
      } catch {
        // try the next flag set; an unusable pattern is skipped (the server still checks)
      }
    }
    regexCache.set(pattern, regex);
  }
  return regexCache.get(pattern);
}

export function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function hasType(value, type) {
  if (typeof value === "number" && !Number.isFinite(value)) return false;
  const actual = typeOf(value);
  if (type === "number") return actual === "number" || actual === "integer";
  return actual === type;
}

function equal(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function join(path, key) {
  return path === "" ? String(key) : `${path}.${key}`;
}

function describeTypes(types) {
  const names = types.map((t) => TYPE_NAMES[t] || t);
  if (names.length === 1) return names[0];
  return `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** Follow a local "$ref" ("#/$defs/Name", "#/definitions/Name", any JSON pointer). */
export function resolveRef(ref, root) {
  if (typeof ref !== "string" || !ref.startsWith("#")) {
    throw new Error(`unsupported $ref ${ref}`);
  }
  const parts = ref.slice(1).split("/").filter((p) => p !== "");
  let node = root;
  for (const raw of parts) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || !(key in node)) {
      throw new Error(`unresolvable $ref ${ref}`);
    }
    node = node[key];
  }
  return node;
}

/** The schema with $ref followed (siblings of $ref are merged over the target). */
export function deref(schema, root) {
  let current = schema;
  let guard = 0;
  while (current && typeof current === "object" && "$ref" in current && guard < 32) {
    const { $ref, ...rest } = current;
    current = { ...resolveRef($ref, root), ...rest };
    guard += 1;
  }
  return current;
}

/** The non-null alternative of an "X or null" schema (pydantic's Optional), else the schema. */
export function nonNullSchema(schema, root = schema) {
  const s = deref(schema, root) || {};
  const options = s.anyOf || s.oneOf;
  if (Array.isArray(options)) {
    const rest = options.map((o) => deref(o, root)).filter((o) => !(o && o.type === "null"));
    if (rest.length === 1) {
      const { anyOf: _a, oneOf: _o, ...outer } = s;
      return { ...outer, ...rest[0] };
    }
  }
  return s;
}

/** The JSON types a schema allows (following $ref, anyOf and oneOf). */
export function allowedTypes(schema, root = schema) {
  const s = deref(schema, root) || {};
  const found = new Set();
  if (typeof s.type === "string") found.add(s.type);
  if (Array.isArray(s.type)) s.type.forEach((t) => found.add(t));
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(s[key])) {
      s[key].forEach((o) => allowedTypes(o, root).forEach((t) => found.add(t)));
    }
  }
  if ("const" in s) found.add(typeOf(s.const));
  if (Array.isArray(s.enum)) s.enum.forEach((v) => found.add(typeOf(v)));
  return [...found];
}

function patternMessage(schema, description) {
  const text = schema.description || description;
  return text ? `Does not have the expected form. ${text}` : `Must match ${schema.pattern}.`;
}

function validateNode(schema, value, path, root, description, errors) {
  if (schema === true || schema === undefined) return;
  if (schema === false) {
    errors.push({ path, keyword: "false", message: "Is not allowed here." });
    return;
  }
  const s = deref(schema, root);
  const describe = s.description || description;

  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => hasType(value, t))) {
      errors.push({ path, keyword: "type", message: `Must be ${describeTypes(types)}.` });
      return;
    }
  }
  if (Array.isArray(s.enum) && !s.enum.some((v) => equal(v, value))) {
    const shown = s.enum.map((v) => JSON.stringify(v)).join(", ");
    errors.push({ path, keyword: "enum", message: `Must be one of ${shown}.` });
  }
  if ("const" in s && !equal(s.const, value)) {
    errors.push({ path, keyword: "const", message: `Must be ${JSON.stringify(s.const)}.` });
  }

  if (Array.isArray(s.allOf)) {
    s.allOf.forEach((sub) => validateNode(sub, value, path, root, describe, errors));
  }
  if (Array.isArray(s.anyOf)) {
    validateAlternatives(s.anyOf, value, path, root, describe, errors, false);
  }
  if (Array.isArray(s.oneOf)) {
    validateAlternatives(s.oneOf, value, path, root, describe, errors, true);
  }
  if (s.not !== undefined) {
    const inner = [];
    validateNode(s.not, value, path, root, describe, inner);
    if (inner.length === 0) errors.push({ path, keyword: "not", message: "Is not allowed." });
  }

  if (typeof value === "string") validateString(s, value, path, describe, errors);
  if (typeof value === "number") validateNumber(s, value, path, errors);
  if (Array.isArray(value)) validateArray(s, value, path, root, describe, errors);
  if (typeOf(value) === "object") validateObject(s, value, path, root, errors);
}

function validateAlternatives(options, value, path, root, description, errors, exactlyOne) {
  const results = options.map((option) => {
    const found = [];
    validateNode(option, value, path, root, description, found);
    return found;
  });
  const passing = results.filter((r) => r.length === 0).length;
  if (exactlyOne ? passing === 1 : passing >= 1) return;
  if (exactlyOne && passing > 1) {
    errors.push({ path, keyword: "oneOf", message: "Matches more than one allowed form." });
    return;
  }
  // Report the alternative whose type fits (its errors are the useful ones).
  const typeFits = results.filter(
    (r) => !r.some((e) => e.path === path && e.keyword === "type"),
  );
  if (typeFits.length > 0) {
    typeFits.sort((a, b) => a.length - b.length);
    errors.push(...typeFits[0]);
    return;
  }
  const types = [...new Set(options.flatMap((o) => allowedTypes(o, root)))];
  errors.push({ path, keyword: "type", message: `Must be ${describeTypes(types)}.` });
}

function validateString(s, value, path, description, errors) {
  const length = [...value].length;
  if (typeof s.minLength === "number" && length < s.minLength) {
    errors.push({
      path,
      keyword: "minLength",
      message: s.minLength === 1 ? "Must not be empty." : `Must have at least ${plural(s.minLength, "character")}.`,
    });
  }
  if (typeof s.maxLength === "number" && length > s.maxLength) {
    errors.push({
      path,
      keyword: "maxLength",
      message: `Must have at most ${plural(s.maxLength, "character")} (has ${length}).`,
    });
  }
  if (typeof s.pattern === "string" && length > 0) {
    const regex = compilePattern(s.pattern);
    if (regex && !regex.test(value)) {
      errors.push({ path, keyword: "pattern", message: patternMessage(s, description) });
    }
  }
}

function validateNumber(s, value, path, errors) {
  if (typeof s.minimum === "number" && value < s.minimum) {
    errors.push({ path, keyword: "minimum", message: `Must be at least ${s.minimum}.` });
  }
  if (typeof s.maximum === "number" && value > s.maximum) {
    errors.push({ path, keyword: "maximum", message: `Must be at most ${s.maximum}.` });
  }
  if (typeof s.exclusiveMinimum === "number" && value <= s.exclusiveMinimum) {
    errors.push({
      path, keyword: "exclusiveMinimum", message: `Must be greater than ${s.exclusiveMinimum}.`,
    });
  }
  if (typeof s.exclusiveMaximum === "number" && value >= s.exclusiveMaximum) {
    errors.push({
      path, keyword: "exclusiveMaximum", message: `Must be less than ${s.exclusiveMaximum}.`,
    });
  }
  if (typeof s.multipleOf === "number" && s.multipleOf > 0) {
    const ratio = value / s.multipleOf;
    if (Math.abs(ratio - Math.round(ratio)) > 1e-9) {
      errors.push({ path, keyword: "multipleOf", message: `Must be a multiple of ${s.multipleOf}.` });
    }
  }
}

function validateArray(s, value, path, root, description, errors) {
  if (typeof s.minItems === "number" && value.length < s.minItems) {
    errors.push({ path, keyword: "minItems", message: `Needs at least ${plural(s.minItems, "item")}.` });
  }
  if (typeof s.maxItems === "number" && value.length > s.maxItems) {
    errors.push({
      path, keyword: "maxItems",
      message: `Allows at most ${plural(s.maxItems, "item")} (has ${value.length}).`,
    });
  }
  const prefix = Array.isArray(s.prefixItems) ? s.prefixItems : Array.isArray(s.items) ? s.items : [];
  value.forEach((item, index) => {
    let itemSchema;
    if (index < prefix.length) itemSchema = prefix[index];
    else if (s.items && !Array.isArray(s.items)) itemSchema = s.items;
    else if (Array.isArray(s.items) && s.additionalItems !== undefined) itemSchema = s.additionalItems;
    if (itemSchema !== undefined) {
      validateNode(itemSchema, item, join(path, index), root, undefined, errors);
    }
  });
  if (s.uniqueItems === true) {
    const seen = new Set();
    value.forEach((item, index) => {
      const key = JSON.stringify(item);
      if (seen.has(key)) {
        errors.push({ path: join(path, index), keyword: "uniqueItems", message: "Is a duplicate." });
      }
      seen.add(key);
    });
  }
}

function validateObject(s, value, path, root, errors) {
  const keys = Object.keys(value);
  const properties = s.properties || {};
  for (const name of s.required || []) {
    if (!(name in value) || value[name] === undefined) {
      errors.push({ path: join(path, name), keyword: "required", message: "This field is required." });
    }
  }
  if (typeof s.minProperties === "number" && keys.length < s.minProperties) {
    errors.push({ path, keyword: "minProperties", message: `Needs at least ${plural(s.minProperties, "entry")}.` });
  }
  if (typeof s.maxProperties === "number" && keys.length > s.maxProperties) {
    errors.push({
      path, keyword: "maxProperties",
      message: `Allows at most ${plural(s.maxProperties, "entry")} (has ${keys.length}).`,
    });
  }
  const patterns = Object.entries(s.patternProperties || {}).map(
    ([pattern, sub]) => [compilePattern(pattern), sub, pattern],
  );
  for (const key of keys) {
    const child = value[key];
    if (child === undefined) continue;
    const childPath = join(path, key);
    if (s.propertyNames !== undefined) {
      const nameErrors = [];
      validateNode(s.propertyNames, key, childPath, root, undefined, nameErrors);
      for (const e of nameErrors) {
        errors.push({ ...e, keyword: "propertyNames", message: `Name "${key}": ${e.message}` });
      }
    }
    let matched = false;
    if (key in properties) {
      matched = true;
      validateNode(properties[key], child, childPath, root, undefined, errors);
    }
    for (const [regex, sub, pattern] of patterns) {
      if (regex && regex.test(key)) {
        matched = true;
        validateNode(sub, child, childPath, root, undefined, errors);
      } else if (!regex) {
        matched = matched || pattern === key;
      }
    }
    if (!matched && s.additionalProperties !== undefined) {
      if (s.additionalProperties === false) {
        errors.push({
          path: childPath, keyword: "additionalProperties",
          message: patterns.length > 0
            ? `Name "${key}" is not allowed (names must match ${patterns.map((p) => p[2]).join(" or ")}).`
            : `"${key}" is not an accepted field.`,
        });
      } else {
        validateNode(s.additionalProperties, child, childPath, root, undefined, errors);
      }
    }
  }
  // pydantic writes dict key patterns as patternProperties without additionalProperties:
  // keys that match none would be accepted by the schema yet refused by the server, so an
  // object that has only patternProperties is treated as closed.
  if (patterns.length > 0 && s.additionalProperties === undefined && !s.properties) {
    for (const key of keys) {
      if (!patterns.some(([regex]) => regex && regex.test(key))) {
        errors.push({
          path: join(path, key), keyword: "patternProperties",
          message: `Name "${key}" is not allowed: names must match ${patterns.map((p) => p[2]).join(" or ")}.`,
        });
      }
    }
  }
}

/** Validate ``value`` against ``schema``; returns [] when it is valid. */
export function validate(schema, value, root = schema) {
  const errors = [];
  validateNode(schema, value, "", root, undefined, errors);
  const seen = new Set();
  return errors.filter((e) => {
    const key = `${e.path}\u0000${e.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The schema of one top-level property, and whether the model requires it. */
export function propertySchema(schema, name) {
  const s = deref(schema, schema) || {};
  const property = (s.properties || {})[name];
  return {
    schema: property === undefined ? undefined : deref(property, schema),
    required: Array.isArray(s.required) && s.required.includes(name),
  };
}
