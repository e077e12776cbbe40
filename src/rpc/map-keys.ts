// map-keys makes protobuf-es keep a map entry whose key is "__proto__".
//
// protobuf-es v2 holds a map field in a plain object and its decoders (binary and JSON) store an
// entry with `obj[key] = value`. For the key "__proto__" that assignment goes to the prototype
// setter: the entry vanishes from the message (a string value is dropped, a message value becomes
// the object's prototype), before any of our code or protovalidate sees the request. This module
// replaces the map's `set` so that such a key becomes an ordinary own property, which iteration,
// protovalidate and our handlers then see like any other key. The contract refuses the key
// (`map.keys.string.not_in = "__proto__"` on every request map), since protobuf-es's JSON encoder
// could not write it back: a write that carries it is INVALID_ARGUMENT, never acknowledged and lost.
//
// It is installed once, on import, before any request is decoded (src/rpc/convert.ts imports it).
import { create, type DescField } from "@bufbuild/protobuf";
import { reflectMap } from "@bufbuild/protobuf/reflect";
import { StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";

const PROTO_KEY = "__proto__";
const installed = Symbol.for("opengms.mapKeys");

type MapSet = (this: MapImpl, key: unknown, value: unknown) => MapImpl;

interface MapImpl {
  set: MapSet;
  obj: Record<string, unknown>;
}

function install(): void {
  // Any map field gives us the (unexported) map class; google.protobuf.Struct has one.
  const field = StructSchema.fields.find((f) => f.fieldKind === "map");
  if (field === undefined) throw new Error("google.protobuf.Struct has no map field");
  const sample = reflectMap(field as DescField & { fieldKind: "map" }, undefined, false) as unknown as MapImpl;
  const proto = Object.getPrototypeOf(sample) as MapImpl & { [installed]?: true };
  if (proto[installed]) return;
  const original = proto.set;
  proto.set = function set(this: MapImpl, key: unknown, value: unknown): MapImpl {
    if (key !== PROTO_KEY) return original.call(this, key, value);
    // Let the original check and convert the value, into a scratch object, then move it over as
    // an own property of the real one.
    const real = this.obj;
    const scratch: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    this.obj = scratch;
    try {
      original.call(this, key, value);
    } finally {
      this.obj = real;
    }
    Object.defineProperty(real, PROTO_KEY, { value: scratch[PROTO_KEY], enumerable: true, writable: true, configurable: true });
    return this;
  };
  Object.defineProperty(proto, installed, { value: true });
  // Self-check: a decoded Struct with the key keeps it as its own.
  const probe = create(StructSchema);
  (reflectMap(field as DescField & { fieldKind: "map" }, probe.fields, false) as unknown as MapImpl).set(PROTO_KEY, create(ValueSchema));
  if (!Object.prototype.hasOwnProperty.call(probe.fields, PROTO_KEY)) throw new Error("map-keys: protobuf-es map no longer patched");
}

install();
