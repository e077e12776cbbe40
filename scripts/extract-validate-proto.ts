/**
 * Recreates third_party/proto/buf/validate/validate.proto from the file
 * descriptor that @bufbuild/protovalidate embeds in its generated code.
 *
 * Why: our .proto files import "buf/validate/validate.proto", but the schema
 * registry (buf.build/bufbuild/protovalidate) is not reachable from here, so
 * the upstream source is not available. The npm package carries the schema
 * only as a serialized google.protobuf.FileDescriptorProto, which this script
 * prints back as .proto source.
 *
 * Usage (from the repository root):
 *
 *   node --import tsx scripts/extract-validate-proto.ts            # write the file
 *   node --import tsx scripts/extract-validate-proto.ts --verify   # write, then round-trip check
 *   node --import tsx scripts/extract-validate-proto.ts --stdout   # print instead of writing
 *
 * --verify compiles third_party/proto with node_modules/.bin/buf, decodes the
 * resulting FileDescriptorSet and compares the FileDescriptorProto of
 * buf/validate/validate.proto with the embedded one (source_code_info cleared),
 * including custom options (as extensions and as raw unknown-field bytes).
 * It exits non-zero on any difference.
 *
 * The printer is general enough for proto2/proto3 files without groups, but it
 * fails loudly (throws) on any construct it cannot print faithfully instead of
 * silently dropping it.
 */
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";

import {
  clone,
  createRegistry,
  equals,
  fromBinary,
  getExtension,
  isFieldSet,
  toBinary,
  ScalarType,
  type DescExtension,
  type DescField,
  type DescFile,
  type DescMessage,
  type Message,
  type Registry,
} from "@bufbuild/protobuf";
import { protoCamelCase, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  EnumOptionsSchema,
  EnumValueOptionsSchema,
  ExtensionRangeOptionsSchema,
  FieldOptionsSchema,
  FieldDescriptorProtoSchema,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  FileOptionsSchema,
  MessageOptionsSchema,
  MethodOptionsSchema,
  OneofOptionsSchema,
  ServiceOptionsSchema,
  SourceCodeInfo_LocationSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FileDescriptorProto,
  type ServiceDescriptorProto,
  type SourceCodeInfo_Location,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const thirdPartyDir = join(repoRoot, "third_party", "proto");
const outFile = join(thirdPartyDir, "buf", "validate", "validate.proto");

/** Field number limits used by the `max` keyword. */
const MESSAGE_FIELD_MAX_EXCLUSIVE = 536870912; // 2^29, end of message/extension ranges (exclusive)
const ENUM_VALUE_MAX_INCLUSIVE = 2147483647; // 2^31-1, end of enum reserved ranges (inclusive)

// ---------------------------------------------------------------------------
// Package metadata

function protovalidateVersion(): string {
  // The package's "exports" map does not expose package.json; walk up from its entry point.
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve("@bufbuild/protovalidate"));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "@bufbuild/protovalidate" && pkg.version) return pkg.version;
    } catch {
      // keep walking
    }
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find @bufbuild/protovalidate/package.json");
    dir = up;
  }
}

// ---------------------------------------------------------------------------
// Symbols and name resolution

/**
 * All fully-qualified symbol names (without leading dot) visible to the
 * printed file: package name components, messages, enums, enum values,
 * fields, oneofs, extensions, services and methods of the file and of its
 * (transitive) dependencies. Used to find the shortest relative name that
 * protoc/protocompile resolve back to the intended symbol.
 */
function collectSymbols(files: FileDescriptorProto[]): Set<string> {
  const out = new Set<string>();
  const add = (scope: string, name: string) => {
    const fq = scope ? `${scope}.${name}` : name;
    out.add(fq);
    return fq;
  };
  const addEnum = (scope: string, e: EnumDescriptorProto) => {
    add(scope, e.name);
    // Enum values are siblings of their enum (C++ scoping rules).
    for (const v of e.value) add(scope, v.name);
  };
  const addMsg = (scope: string, m: DescriptorProto) => {
    const fq = add(scope, m.name);
    for (const f of m.field) add(fq, f.name);
    for (const f of m.extension) add(fq, f.name);
    for (const o of m.oneofDecl) add(fq, o.name);
    for (const n of m.nestedType) addMsg(fq, n);
    for (const e of m.enumType) addEnum(fq, e);
  };
  for (const file of files) {
    const parts = file.package ? file.package.split(".") : [];
    for (let i = 1; i <= parts.length; i++) out.add(parts.slice(0, i).join("."));
    for (const m of file.messageType) addMsg(file.package, m);
    for (const e of file.enumType) addEnum(file.package, e);
    for (const x of file.extension) add(file.package, x.name);
    for (const s of file.service) {
      const fq = add(file.package, s.name);
      for (const m of s.method) add(fq, m.name);
    }
  }
  return out;
}

function parentScope(scope: string): string | undefined {
  if (scope === "") return undefined;
  const i = scope.lastIndexOf(".");
  return i < 0 ? "" : scope.slice(0, i);
}

class Names {
  constructor(private readonly symbols: Set<string>) {}

  /**
   * Shortest suffix of `target` (fully-qualified, with or without leading dot)
   * that resolves to `target` from `scope`. Conservative: the first component
   * is looked up from the innermost scope outward and *any* symbol with that
   * name stops the search (protoc may skip some non-type symbols; we never
   * rely on that), so an accepted name is never resolved differently.
   * Falls back to the fully-qualified name with a leading dot.
   */
  relative(target: string, scope: string): string {
    const fq = target.startsWith(".") ? target.slice(1) : target;
    if (!this.symbols.has(fq)) throw new Error(`unknown symbol ${target}`);
    const parts = fq.split(".");
    for (let n = 1; n <= parts.length; n++) {
      const cand = parts.slice(parts.length - n);
      if (this.resolve(cand, scope) === fq) return cand.join(".");
    }
    return `.${fq}`;
  }

  private resolve(cand: string[], scope: string): string | undefined {
    for (let s: string | undefined = scope; s !== undefined; s = parentScope(s)) {
      const first = s ? `${s}.${cand[0]}` : cand[0];
      if (this.symbols.has(first)) {
        const full = [first, ...cand.slice(1)].join(".");
        return this.symbols.has(full) ? full : undefined;
      }
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// Literals

/** Escape a JS string (UTF-16) as a double-quoted proto/text-format string literal (UTF-8 passes through). */
function quoteString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    switch (ch) {
      case "\\":
        out += "\\\\";
        break;
      case '"':
        out += '\\"';
        break;
      case "\n":
        out += "\\n";
        break;
      case "\r":
        out += "\\r";
        break;
      case "\t":
        out += "\\t";
        break;
      default:
        out += c < 0x20 || c === 0x7f ? `\\${c.toString(8).padStart(3, "0")}` : ch;
    }
  }
  return out + '"';
}

/** Escape raw bytes as a double-quoted literal, octal-escaping everything outside printable ASCII. */
function quoteBytes(b: Uint8Array): string {
  let out = '"';
  for (const c of b) {
    if (c === 0x5c) out += "\\\\";
    else if (c === 0x22) out += '\\"';
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c < 0x20 || c >= 0x7f) out += `\\${c.toString(8).padStart(3, "0")}`;
    else out += String.fromCharCode(c);
  }
  return out + '"';
}

function floatLiteral(v: number, single: boolean): string {
  if (Number.isNaN(v)) return "nan";
  if (v === Infinity) return "inf";
  if (v === -Infinity) return "-inf";
  if (Object.is(v, -0)) return "-0";
  if (!single) return String(v);
  for (let p = 1; p <= 17; p++) {
    const s = v.toPrecision(p);
    if (Math.fround(Number(s)) === v) return String(Number(s));
  }
  return String(v);
}

function scalarLiteral(type: ScalarType, v: unknown): string {
  switch (type) {
    case ScalarType.STRING:
      return quoteString(v as string);
    case ScalarType.BYTES:
      return quoteBytes(v as Uint8Array);
    case ScalarType.BOOL:
      return v ? "true" : "false";
    case ScalarType.FLOAT:
      return floatLiteral(v as number, true);
    case ScalarType.DOUBLE:
      return floatLiteral(v as number, false);
    default:
      return String(v); // integers (number or bigint)
  }
}

// ---------------------------------------------------------------------------
// Option values

class OptionPrinter {
  constructor(
    private readonly names: Names,
    private readonly registry: Registry,
  ) {}

  /**
   * Render the options message `opts` (of descriptor.proto type `schema`) as a
   * list of `name = value` assignments, in the form accepted both in
   * `option ...;` statements and in `[...]` lists. Message-valued custom
   * options are split into one assignment per set sub-field (and per element
   * of repeated sub-fields), like upstream writes `(predefined).cel = {...}`.
   */
  assignments(schema: DescMessage, opts: Message | undefined, scope: string, indent: string): string[] {
    if (!opts) return [];
    const r = reflect(schema, opts);
    const out: string[] = [];
    for (const f of r.fields) {
      if (!r.isSet(f)) continue;
      if (f.name === "uninterpreted_option") {
        throw new Error(`${schema.typeName} in ${scope} has uninterpreted_option; cannot print`);
      }
      for (const v of this.values(r, f.number, indent)) out.push(`${f.name} = ${v}`);
    }
    for (const ext of this.extensionsOf(r, scope)) {
      const name = `(${this.names.relative(ext.typeName, scope)})`;
      const value = getExtension(opts, ext);
      if (ext.fieldKind === "message") {
        const sub = reflect(ext.message, value as Message);
        const set = sub.fields.filter((g) => sub.isSet(g));
        const splittable =
          set.length > 0 &&
          (sub.getUnknown() ?? []).length === 0 &&
          set.every((g) => g.fieldKind !== "map" && !isDelimited(g));
        if (splittable) {
          // (ext).field = value, once per set field / list element (upstream style)
          for (const g of set) {
            for (const v of this.subValues(sub, g.number, indent)) out.push(`${name}.${g.name} = ${v}`);
          }
        } else {
          // (ext) = { ... } as one message literal (maps, extensions, or empty)
          out.push(`${name} = ${this.messageLiteral(value as Message, ext.message, indent)}`);
        }
      } else if (ext.fieldKind === "list") {
        for (const v of value as unknown[]) out.push(`${name} = ${this.single(ext, v, indent)}`);
      } else if (ext.fieldKind === "scalar" || ext.fieldKind === "enum") {
        out.push(`${name} = ${this.single(ext, value, indent)}`);
      } else {
        const e = ext as DescExtension;
        throw new Error(`unsupported extension kind ${e.fieldKind} for ${e.typeName}`);
      }
    }
    return out;
  }

  private extensionsOf(r: ReflectMessage, where: string): DescExtension[] {
    const seen: DescExtension[] = [];
    for (const u of r.getUnknown() ?? []) {
      const ext = this.registry.getExtensionFor(r.desc, u.no);
      if (!ext) throw new Error(`${r.desc.typeName} in ${where}: unknown field ${u.no} is not a known extension`);
      if (!seen.includes(ext)) seen.push(ext);
    }
    return seen;
  }

  /** Values of a known field of an options message (one per list element). */
  private values(r: ReflectMessage, no: number, indent: string): string[] {
    return this.subValues(r, no, indent);
  }

  /** Values of a field of a message-valued custom option (one per list element). */
  private subValues(r: ReflectMessage, no: number, indent: string): string[] {
    const f = r.desc.fields.find((x) => x.number === no)!;
    switch (f.fieldKind) {
      case "list":
        return [...(r.get(f) as Iterable<unknown>)].map((v) =>
          this.single(f, isReflect(v) ? v.message : v, indent),
        );
      case "map":
        throw new Error(`map field ${f.name} in option value not supported`);
      case "message":
        return [this.messageLiteral((r.get(f) as ReflectMessage).message, f.message, indent)];
      default:
        return [this.single(f, r.get(f), indent)];
    }
  }

  /** One value of a field (scalar, enum or message) as an option value. */
  private single(
    f: { fieldKind: string; scalar?: ScalarType; enum?: { values: { number: number; name: string }[] }; message?: DescMessage },
    v: unknown,
    indent: string,
  ): string {
    if (f.message) return this.messageLiteral(v as Message, f.message, indent);
    if (f.enum) {
      const ev = f.enum.values.find((x) => x.number === v);
      if (!ev) throw new Error(`enum value ${String(v)} has no name`);
      return ev.name;
    }
    return scalarLiteral(f.scalar!, v);
  }

  /** A message literal `{ ... }` in protobuf text format, multi-line. */
  messageLiteral(msg: Message, schema: DescMessage, indent: string): string {
    const r = reflect(schema, msg);
    const inner = indent + "  ";
    const lines: string[] = [];
    for (const f of r.fields) {
      if (!r.isSet(f)) continue;
      if (isDelimited(f)) {
        throw new Error(`group/delimited field ${f.name} in option value not supported`);
      }
      switch (f.fieldKind) {
        case "list":
          for (const v of r.get(f) as Iterable<unknown>) {
            lines.push(this.textField(f.name, f, isReflect(v) ? v.message : v, inner));
          }
          break;
        case "map":
          for (const [k, v] of r.get(f) as Iterable<[unknown, unknown]>) {
            const key = scalarLiteral(f.mapKey, f.mapKey === ScalarType.BOOL ? k === true || k === "true" : k);
            const val =
              f.mapKind === "message"
                ? `value ${this.messageLiteral((v as ReflectMessage).message, f.message, inner + "  ")}`
                : `value: ${this.single(f, v, inner)}`;
            lines.push(`${inner}${f.name} {\n${inner}  key: ${key}\n${inner}  ${val}\n${inner}}`);
          }
          break;
        case "message":
          lines.push(this.textField(f.name, f, (r.get(f) as ReflectMessage).message, inner));
          break;
        default:
          lines.push(this.textField(f.name, f, r.get(f), inner));
      }
    }
    for (const ext of this.extensionsOf(r, schema.typeName)) {
      const v = getExtension(msg, ext);
      const values = ext.fieldKind === "list" ? (v as unknown[]) : [v];
      for (const x of values) lines.push(this.textField(`[${ext.typeName}]`, ext, x, inner));
    }
    if (lines.length === 0) return "{}";
    return `{\n${lines.join("\n")}\n${indent}}`;
  }

  private textField(name: string, f: Parameters<OptionPrinter["single"]>[0], v: unknown, indent: string): string {
    if (f.message) return `${indent}${name} ${this.messageLiteral(v as Message, f.message, indent)}`;
    return `${indent}${name}: ${this.single(f, v, indent)}`;
  }
}

/** oneof_index if set (proto2 fields in protobuf-es v2 have implicit defaults, so check presence). */
function oneofOf(fd: FieldDescriptorProto): number | undefined {
  return isFieldSet(fd, FieldDescriptorProtoSchema.field.oneofIndex) ? fd.oneofIndex : undefined;
}

/** Group-encoded (proto2 group / editions DELIMITED) message field? */
function isDelimited(f: DescField | DescExtension): boolean {
  return "delimitedEncoding" in f && f.delimitedEncoding === true;
}

function isReflect(v: unknown): v is ReflectMessage {
  return typeof v === "object" && v !== null && "desc" in v && "message" in v;
}

// ---------------------------------------------------------------------------
// .proto printer

const scalarTypeNames: Partial<Record<Type, string>> = {
  [Type.DOUBLE]: "double",
  [Type.FLOAT]: "float",
  [Type.INT64]: "int64",
  [Type.UINT64]: "uint64",
  [Type.INT32]: "int32",
  [Type.FIXED64]: "fixed64",
  [Type.FIXED32]: "fixed32",
  [Type.BOOL]: "bool",
  [Type.STRING]: "string",
  [Type.BYTES]: "bytes",
  [Type.UINT32]: "uint32",
  [Type.SFIXED32]: "sfixed32",
  [Type.SFIXED64]: "sfixed64",
  [Type.SINT32]: "sint32",
  [Type.SINT64]: "sint64",
};

class ProtoPrinter {
  private readonly lines: string[] = [];
  private readonly comments = new Map<string, SourceCodeInfo_Location>();
  private readonly syntax: "proto2" | "proto3";
  private readonly names: Names;
  private readonly opts: OptionPrinter;

  constructor(
    private readonly file: FileDescriptorProto,
    deps: FileDescriptorProto[],
    registry: Registry,
  ) {
    if (file.syntax === "" || file.syntax === "proto2") this.syntax = "proto2";
    else if (file.syntax === "proto3") this.syntax = "proto3";
    else throw new Error(`syntax ${JSON.stringify(file.syntax)} (editions) is not supported by this printer`);
    if (file.optionDependency.length) throw new Error("`import option` (option_dependency) not supported");
    this.names = new Names(collectSymbols([file, ...deps]));
    this.opts = new OptionPrinter(this.names, registry);
    for (const loc of file.sourceCodeInfo?.location ?? []) this.comments.set(loc.path.join(","), loc);
  }

  print(header: string[]): string {
    const f = this.file;
    this.lines.push(...header);
    this.leadingComments([12]);
    this.lines.push(`syntax = "${this.syntax}";`, "");
    if (f.package) {
      this.leadingComments([2]);
      this.lines.push(`package ${f.package};`, "");
    }
    if (f.dependency.length) {
      f.dependency.forEach((d, i) => {
        this.leadingComments([3, i]);
        const kind = f.publicDependency.includes(i) ? "public " : f.weakDependency.includes(i) ? "weak " : "";
        this.lines.push(`import ${kind}${quoteString(d)};`);
      });
      this.lines.push("");
    }
    const fileOpts = this.opts.assignments(
      FileOptionsSchema,
      f.options,
      f.package,
      "",
    );
    if (fileOpts.length) {
      for (const a of fileOpts) this.lines.push(`option ${a};`);
      this.lines.push("");
    }
    this.printExtensions(f.extension, [7], f.package, "");
    f.messageType.forEach((m, i) => this.printMessage(m, [4, i], f.package, ""));
    f.enumType.forEach((e, i) => this.printEnum(e, [5, i], f.package, ""));
    f.service.forEach((s, i) => this.printService(s, [6, i], f.package));
    while (this.lines[this.lines.length - 1] === "") this.lines.pop();
    return this.lines.join("\n") + "\n";
  }

  private leadingComments(path: number[], indent = "") {
    const loc = this.comments.get(path.join(","));
    if (!loc) return;
    const block = (text: string) => {
      const t = text.endsWith("\n") ? text.slice(0, -1) : text;
      for (const line of t.split("\n")) {
        this.lines.push(`${indent}//${line === "" || line.startsWith(" ") ? line : " " + line}`.trimEnd());
      }
    };
    for (const d of loc.leadingDetachedComments) {
      block(d);
      this.lines.push("");
    }
    if (isFieldSet(loc, SourceCodeInfo_LocationSchema.field.leadingComments)) block(loc.leadingComments);
    if (isFieldSet(loc, SourceCodeInfo_LocationSchema.field.trailingComments)) {
      // Printed as a leading comment; protoc attaches it to the element as leading, not trailing.
      block(loc.trailingComments);
    }
  }

  /**
   * `[a = 1]` / multi-line `[\n a = 1,\n b = 2\n]` suffix (with leading space),
   * or "". `items(ind)` renders the assignments with multi-line values
   * closing at indentation `ind`.
   */
  private bracket(items: (indent: string) => string[], indent: string): string {
    const single = items(indent);
    if (single.length === 0) return "";
    if (single.length === 1) return ` [${single[0]}]`;
    const inner = indent + "  ";
    return ` [\n${items(inner).map((s) => inner + s).join(",\n")}\n${indent}]`;
  }

  private fieldOptionItems(fd: FieldDescriptorProto, scope: string, indent: string): string[] {
    const items: string[] = [];
    if (isFieldSet(fd, FieldDescriptorProtoSchema.field.defaultValue)) items.push(`default = ${this.defaultLiteral(fd)}`);
    if (isFieldSet(fd, FieldDescriptorProtoSchema.field.jsonName) && fd.jsonName !== protoCamelCase(fd.name)) {
      items.push(`json_name = ${quoteString(fd.jsonName)}`);
    }
    // Option names are resolved relative to the element itself.
    items.push(...this.opts.assignments(FieldOptionsSchema, fd.options, scope ? `${scope}.${fd.name}` : fd.name, indent));
    return items;
  }

  private defaultLiteral(fd: FieldDescriptorProto): string {
    const v = fd.defaultValue;
    switch (fd.type) {
      case Type.STRING:
        return quoteString(v);
      case Type.BYTES:
        return `"${v}"`; // already C-escaped in the descriptor
      case Type.ENUM:
        return v; // the bare value name
      default:
        return v; // numbers, bool, inf/-inf/nan as stored
    }
  }

  private typeName(fd: FieldDescriptorProto, scope: string): string {
    if (fd.type === Type.MESSAGE || fd.type === Type.ENUM) return this.names.relative(fd.typeName, scope);
    if (fd.type === Type.GROUP) throw new Error(`group field ${fd.name} not supported`);
    const s = scalarTypeNames[fd.type];
    if (!s) throw new Error(`unknown field type ${fd.type} for ${fd.name}`);
    return s;
  }

  private label(fd: FieldDescriptorProto): string {
    if (fd.label === Label.REPEATED) return "repeated ";
    if (this.syntax === "proto2") return fd.label === Label.REQUIRED ? "required " : "optional ";
    if (fd.label === Label.REQUIRED) throw new Error("required in proto3");
    return fd.proto3Optional ? "optional " : "";
  }

  private printField(fd: FieldDescriptorProto, path: number[], scope: string, indent: string, mapEntries: Map<string, DescriptorProto>, noLabel = false) {
    this.leadingComments(path, indent);
    const items = (ind: string) => this.fieldOptionItems(fd, scope, ind);
    const entry = fd.label === Label.REPEATED && fd.type === Type.MESSAGE ? mapEntries.get(fd.typeName) : undefined;
    let typeText: string;
    let label: string;
    if (entry) {
      const [k, v] = [entry.field.find((x) => x.number === 1)!, entry.field.find((x) => x.number === 2)!];
      typeText = `map<${this.typeName(k, scope)}, ${this.typeName(v, scope)}>`;
      label = "";
    } else {
      typeText = this.typeName(fd, scope);
      label = noLabel ? "" : this.label(fd);
    }
    this.lines.push(`${indent}${label}${typeText} ${fd.name} = ${fd.number}${this.bracket(items, indent)};`);
  }

  private printExtensions(exts: FieldDescriptorProto[], basePath: number[], scope: string, indent: string) {
    let i = 0;
    while (i < exts.length) {
      const extendee = exts[i].extendee;
      this.lines.push(`${indent}extend ${this.names.relative(extendee, scope)} {`);
      for (; i < exts.length && exts[i].extendee === extendee; i++) {
        if (oneofOf(exts[i]) !== undefined) throw new Error("extension in oneof");
        this.printField(exts[i], [...basePath, i], scope, indent + "  ", new Map());
      }
      this.lines.push(`${indent}}`, "");
    }
  }

  private printMessage(m: DescriptorProto, path: number[], scope: string, indent: string) {
    if (m.options?.mapEntry) return; // printed as map<K, V> at the field
    const fq = scope ? `${scope}.${m.name}` : m.name;
    const inner = indent + "  ";
    this.leadingComments(path, indent);
    this.lines.push(`${indent}message ${m.name} {`);
    const body0 = this.lines.length;

    const msgOptions = MessageOptionsSchema;
    for (const a of this.opts.assignments(msgOptions, m.options, fq, inner)) this.lines.push(`${inner}option ${a};`);
    if (this.lines.length > body0) this.lines.push("");

    const mapEntries = new Map<string, DescriptorProto>();
    for (const n of m.nestedType) if (n.options?.mapEntry) mapEntries.set(`.${fq}.${n.name}`, n);

    const sep = () => {
      if (this.lines.length > body0 && this.lines[this.lines.length - 1] !== "") this.lines.push("");
    };
    // Nested messages are printed in nested_type order. A map field's entry
    // message sits in nested_type at the position of the field's declaration,
    // so nested messages that precede it must be printed before that field.
    let nextNested = 0;
    const flushNested = (upTo: number) => {
      for (; nextNested < upTo; nextNested++) {
        const n = m.nestedType[nextNested];
        if (n.options?.mapEntry) throw new Error(`${fq}: map entry ${n.name} is out of field order`);
        sep();
        this.printMessage(n, [...path, 3, nextNested], fq, inner);
      }
    };

    // Fields, with each (non-synthetic) oneof printed as a block at its first field.
    const synthetic = (idx: number) => m.field.some((f) => oneofOf(f) === idx && f.proto3Optional);
    const oneofDone = new Set<number>();
    let lastOneof = -1;
    for (let i = 0; i < m.field.length; i++) {
      const fd = m.field[i];
      const oi = oneofOf(fd);
      if (oi === undefined || synthetic(oi)) {
        const entry = fd.label === Label.REPEATED && fd.type === Type.MESSAGE ? mapEntries.get(fd.typeName) : undefined;
        if (entry) {
          flushNested(m.nestedType.indexOf(entry));
          nextNested++;
        }
        this.printField(fd, [...path, 2, i], fq, inner, mapEntries);
        continue;
      }
      if (oneofDone.has(oi)) throw new Error(`${fq}: fields of oneof ${m.oneofDecl[oi].name} are not contiguous`);
      if (oi < lastOneof) throw new Error(`${fq}: oneofs are not declared in index order`);
      oneofDone.add(oi);
      lastOneof = oi;
      const od = m.oneofDecl[oi];
      this.leadingComments([...path, 8, oi], inner);
      this.lines.push(`${inner}oneof ${od.name} {`);
      const oneofOptions = OneofOptionsSchema;
      for (const a of this.opts.assignments(oneofOptions, od.options, `${fq}.${od.name}`, inner + "  ")) {
        this.lines.push(`${inner}  option ${a};`);
      }
      for (; i < m.field.length && oneofOf(m.field[i]) === oi; i++) {
        this.printField(m.field[i], [...path, 2, i], fq, inner + "  ", mapEntries, true);
      }
      i--;
      this.lines.push(`${inner}}`);
    }
    m.oneofDecl.forEach((od, oi) => {
      if (!oneofDone.has(oi) && !synthetic(oi)) throw new Error(`${fq}: empty oneof ${od.name}`);
    });

    flushNested(m.nestedType.length);
    m.enumType.forEach((e, i) => {
      sep();
      this.printEnum(e, [...path, 4, i], fq, inner);
    });
    if (m.extension.length) {
      sep();
      this.printExtensions(m.extension, [...path, 6], fq, inner);
    }
    if (m.extensionRange.length) sep();
    const extRangeOptions = ExtensionRangeOptionsSchema;
    m.extensionRange.forEach((r, i) => {
      this.leadingComments([...path, 5, i], inner);
      const items = (ind: string) => this.opts.assignments(extRangeOptions, r.options, fq, ind);
      this.lines.push(`${inner}extensions ${this.range(r.start, r.end - 1, MESSAGE_FIELD_MAX_EXCLUSIVE - 1)}${this.bracket(items, inner)};`);
    });
    if (m.reservedRange.length || m.reservedName.length) sep();
    if (m.reservedRange.length) {
      const rs = m.reservedRange.map((r) => this.range(r.start, r.end - 1, MESSAGE_FIELD_MAX_EXCLUSIVE - 1));
      this.lines.push(`${inner}reserved ${rs.join(", ")};`);
    }
    if (m.reservedName.length) this.lines.push(`${inner}reserved ${m.reservedName.map(quoteString).join(", ")};`);
    while (this.lines[this.lines.length - 1] === "") this.lines.pop();
    this.lines.push(`${indent}}`, "");
  }

  /** `a`, `a to b` or `a to max` with an inclusive end. */
  private range(start: number, endInclusive: number, maxInclusive: number): string {
    if (endInclusive === start) return String(start);
    return `${start} to ${endInclusive === maxInclusive ? "max" : endInclusive}`;
  }

  private printEnum(e: EnumDescriptorProto, path: number[], scope: string, indent: string) {
    const fq = scope ? `${scope}.${e.name}` : e.name;
    const inner = indent + "  ";
    this.leadingComments(path, indent);
    this.lines.push(`${indent}enum ${e.name} {`);
    const enumOptions = EnumOptionsSchema;
    const eo = this.opts.assignments(enumOptions, e.options, fq, inner);
    for (const a of eo) this.lines.push(`${inner}option ${a};`);
    if (eo.length) this.lines.push("");
    const valueOptions = EnumValueOptionsSchema;
    e.value.forEach((v, i) => {
      this.leadingComments([...path, 2, i], inner);
      const items = (ind: string) => this.opts.assignments(valueOptions, v.options, `${scope ? scope + "." : ""}${v.name}`, ind);
      this.lines.push(`${inner}${v.name} = ${v.number}${this.bracket(items, inner)};`);
    });
    if (e.reservedRange.length || e.reservedName.length) this.lines.push("");
    if (e.reservedRange.length) {
      const rs = e.reservedRange.map((r) => this.range(r.start, r.end, ENUM_VALUE_MAX_INCLUSIVE));
      this.lines.push(`${inner}reserved ${rs.join(", ")};`);
    }
    if (e.reservedName.length) this.lines.push(`${inner}reserved ${e.reservedName.map(quoteString).join(", ")};`);
    this.lines.push(`${indent}}`, "");
  }

  private printService(s: ServiceDescriptorProto, path: number[], scope: string) {
    const fq = scope ? `${scope}.${s.name}` : s.name;
    this.leadingComments(path);
    this.lines.push(`service ${s.name} {`);
    const svcOptions = ServiceOptionsSchema;
    for (const a of this.opts.assignments(svcOptions, s.options, fq, "  ")) this.lines.push(`  option ${a};`);
    const methodOptions = MethodOptionsSchema;
    s.method.forEach((m, i) => {
      this.leadingComments([...path, 2, i], "  ");
      const inT = `${m.clientStreaming ? "stream " : ""}${this.names.relative(m.inputType, fq)}`;
      const outT = `${m.serverStreaming ? "stream " : ""}${this.names.relative(m.outputType, fq)}`;
      const items = this.opts.assignments(methodOptions, m.options, `${fq}.${m.name}`, "    ");
      if (items.length === 0) {
        this.lines.push(`  rpc ${m.name}(${inT}) returns (${outT});`);
      } else {
        this.lines.push(`  rpc ${m.name}(${inT}) returns (${outT}) {`);
        for (const a of items) this.lines.push(`    option ${a};`);
        this.lines.push("  }");
      }
    });
    this.lines.push("}", "");
  }
}

// ---------------------------------------------------------------------------
// Main

function allDeps(file: DescFile): DescFile[] {
  const out: DescFile[] = [];
  const visit = (f: DescFile) => {
    for (const d of f.dependencies) {
      if (!out.includes(d)) {
        out.push(d);
        visit(d);
      }
    }
  };
  visit(file);
  return out;
}

function render(): string {
  const file = file_buf_validate_validate;
  const deps = allDeps(file);
  const registry = createRegistry(file, ...deps);
  const version = protovalidateVersion();
  const header = [
    "// Copyright Buf Technologies, Inc.",
    "//",
    '// Licensed under the Apache License, Version 2.0 (the "License");',
    "// you may not use this file except in compliance with the License.",
    "// You may obtain a copy of the License at",
    "//",
    "//      http://www.apache.org/licenses/LICENSE-2.0",
    "//",
    "// Unless required by applicable law or agreed to in writing, software",
    '// distributed under the License is distributed on an "AS IS" BASIS,',
    "// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.",
    "// See the License for the specific language governing permissions and",
    "// limitations under the License.",
    "",
    "// GENERATED FILE - DO NOT EDIT.",
    "//",
    `// Reconstructed by scripts/extract-validate-proto.ts from the file descriptor`,
    `// embedded in @bufbuild/protovalidate ${version} (file_buf_validate_validate in`,
    "// gen/buf/validate/validate_pb.js). The upstream source is",
    "// buf/validate/validate.proto of https://github.com/bufbuild/protovalidate",
    "// (Apache-2.0, see LICENSE next to this file).",
    "//",
    "// The embedded descriptor carries no source_code_info, so the upstream",
    "// documentation comments are not available and are absent here. Declaration",
    "// order between messages, enums and extend blocks is not recorded in a",
    "// descriptor either; everything else (fields, labels, types, json names,",
    "// oneofs, reserved ranges/names, extension ranges, file options and all",
    "// (buf.validate.predefined) rule options) is reproduced exactly: compiling",
    "// this file yields a FileDescriptorProto equal to the embedded one",
    "// (check with: node --import tsx scripts/extract-validate-proto.ts --verify).",
    "",
  ];
  return printProto(file.proto, deps.map((d) => d.proto), registry, header);
}

/** Compile third_party/proto with buf and compare against the embedded descriptor. */
function verify(): boolean {
  const file = file_buf_validate_validate;
  const registry = createRegistry(file, ...allDeps(file));
  const buf = join(repoRoot, "node_modules", ".bin", "buf");
  const tmp = mkdtempSync(join(tmpdir(), "extract-validate-proto-"));
  try {
    // Build a copy outside the repository, so that the repository's buf.yaml
    // workspace (and whatever else is in it) plays no part.
    const moduleDir = join(tmp, "proto");
    cpSync(thirdPartyDir, moduleDir, { recursive: true });
    const image = join(tmp, "image.binpb");
    // --as-file-descriptor-set drops buf's image metadata (unknown field 8042
    // on each FileDescriptorProto), which is not part of the descriptor.
    execFileSync(buf, ["build", "proto", "--as-file-descriptor-set", "-o", image], { cwd: tmp, stdio: ["ignore", "inherit", "inherit"] });
    const set = fromBinary(FileDescriptorSetSchema, readFileSync(image));
    const built = set.file.find((f) => f.name === "buf/validate/validate.proto");
    if (!built) throw new Error("buf/validate/validate.proto missing from buf build output");
    const a = clone(FileDescriptorProtoSchema, file.proto);
    const b = clone(FileDescriptorProtoSchema, built);
    a.sourceCodeInfo = undefined;
    b.sourceCodeInfo = undefined;
    const checks: [string, boolean][] = [
      ["fields", equals(FileDescriptorProtoSchema, a, b)],
      ["fields + extensions (custom options)", equals(FileDescriptorProtoSchema, a, b, { registry, extensions: true })],
      ["fields + raw unknown-field bytes", equals(FileDescriptorProtoSchema, a, b, { registry: createRegistry(), unknown: true })],
      [
        "serialized bytes",
        Buffer.compare(toBinary(FileDescriptorProtoSchema, a), toBinary(FileDescriptorProtoSchema, b)) === 0,
      ],
    ];
    for (const [what, ok] of checks) console.error(`verify: ${what}: ${ok ? "equal" : "DIFFERENT"}`);
    return checks.every(([, ok]) => ok);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Print `file` as .proto source. `deps` are its transitive dependencies (for
 * name resolution); `registry` must know every custom option (extension) used.
 * Exported for testing the printer on other descriptors.
 */
export function printProto(
  file: FileDescriptorProto,
  deps: FileDescriptorProto[],
  registry: Registry,
  header: string[] = [],
): string {
  return new ProtoPrinter(file, deps, registry).print(header);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const args = new Set(process.argv.slice(2));
  const text = render();
  if (args.has("--stdout")) {
    process.stdout.write(text);
  } else {
    mkdirSync(dirname(outFile), { recursive: true });
    writeFileSync(outFile, text);
    console.error(`wrote ${outFile}`);
  }
  if (args.has("--verify") && !verify()) process.exit(1);
}
