import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { create, createFileRegistry, fromBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { GMS_SERVICES } from "../src/server.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const BUF = "node_modules/.bin/buf";
/** Reflection touches no store: one dialect is enough. */
const DIALECT = "sqlite";

type Response = v1.ServerReflectionResponse | v1alpha.ServerReflectionResponse;
type Request = MessageInitShape<typeof v1.ServerReflectionRequestSchema>;

/** dependenciesFirst orders files so each comes after its imports, failing when an import is missing. */
function dependenciesFirst(protos: readonly FileDescriptorProto[]): FileDescriptorProto[] {
  const byName = new Map(protos.map((f) => [f.name, f]));
  const ordered: FileDescriptorProto[] = [];
  const done = new Set<string>();
  const visit = (f: FileDescriptorProto) => {
    if (done.has(f.name)) return;
    done.add(f.name);
    for (const name of f.dependency) {
      const dep = byName.get(name);
      if (dep === undefined) throw new Error(`${name}, imported by ${f.name}, is missing from the answer`);
      visit(dep);
    }
    ordered.push(f);
  };
  protos.forEach(visit);
  return ordered;
}

describe.each([
  ["grpc.reflection.v1", v1.ServerReflection],
  ["grpc.reflection.v1alpha", v1alpha.ServerReflection],
] as const)("%s", (_, service) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(DIALECT);
  });
  afterAll(() => t.close());

  /** ask sends the requests on one bidirectional stream and returns the answers in order. */
  async function ask(...requests: Request[]): Promise<Response[]> {
    const client = createClient(service as typeof v1.ServerReflection, t.grpc);
    async function* send() {
      for (const r of requests) yield r;
    }
    const out: Response[] = [];
    for await (const res of client.serverReflectionInfo(send())) out.push(res);
    return out;
  }

  const files = (res: Response | undefined): FileDescriptorProto[] => {
    expect(res?.messageResponse.case).toBe("fileDescriptorResponse");
    return res?.messageResponse.case === "fileDescriptorResponse"
      ? res.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes))
      : [];
  };

  it("lists the served services, health and reflection", async () => {
    const [res] = await ask({ messageRequest: { case: "listServices", value: "" } });
    expect(res?.messageResponse.case).toBe("listServicesResponse");
    const names = res?.messageResponse.case === "listServicesResponse" ? res.messageResponse.value.service.map((s) => s.name) : [];
    for (const s of [...GMS_SERVICES, Health]) expect(names).toContain(s.typeName);
    expect(names).toContain("grpc.reflection.v1.ServerReflection");
    expect(names).toContain("grpc.reflection.v1alpha.ServerReflection");
  });

  it("file_containing_symbol gives storage.proto and all its dependencies, enough to build a registry", async () => {
    const [res] = await ask({ messageRequest: { case: "fileContainingSymbol", value: "gms.v1.StorageService" } });
    const protos = files(res);
    const names = protos.map((f) => f.name);
    expect(names[0]).toBe("gms/v1/storage.proto");
    expect(names).toEqual(expect.arrayContaining(["gms/v1/value.proto", "buf/validate/validate.proto", "google/protobuf/timestamp.proto"]));
    // Every import is answered, so a client can resolve the service and its messages with no .proto files.
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: dependenciesFirst(protos) }));
    const found = registry.getService("gms.v1.StorageService");
    expect(found?.methods.map((m) => m.name)).toEqual(StorageService.methods.map((m) => m.name));
    const request = registry.getMessage("gms.v1.CreateDataRequest") as DescMessage | undefined;
    expect(request?.fields.map((f) => f.name)).toContain("ttl_seconds");
  });

  it("finds the file of an extension (protovalidate's field rules) and the extension numbers of a type", async () => {
    const [ext, numbers] = await ask(
      { messageRequest: { case: "fileContainingExtension", value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 1159 } } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "google.protobuf.FieldOptions" } },
    );
    expect(files(ext)[0]?.name).toBe("buf/validate/validate.proto");
    expect(numbers?.messageResponse.case).toBe("allExtensionNumbersResponse");
    if (numbers?.messageResponse.case === "allExtensionNumbersResponse") expect(numbers.messageResponse.value.extensionNumber).toContain(1159);
  });

  it("answers several requests on one stream, methods and files by name included, and errors as NOT_FOUND", async () => {
    const answers = await ask(
      { messageRequest: { case: "fileContainingSymbol", value: "gms.v1.StorageService.CreateData" } },
      { messageRequest: { case: "fileByFilename", value: "gms/v1/value.proto" } },
      { messageRequest: { case: "fileContainingSymbol", value: "gms.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "nope.proto" } },
    );
    expect(answers).toHaveLength(4);
    expect(files(answers[0])[0]?.name).toBe("gms/v1/storage.proto");
    expect(files(answers[1])[0]?.name).toBe("gms/v1/value.proto");
    for (const res of answers.slice(2)) {
      expect(res.messageResponse.case).toBe("errorResponse");
      if (res.messageResponse.case === "errorResponse") expect(res.messageResponse.value.errorCode).toBe(5);
    }
  });
});

describe.runIf(existsSync(BUF))("buf curl against the server", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(DIALECT);
  });
  afterAll(() => t.close());

  it("lists the methods by reflection, with no proto files", async () => {
    const { stdout } = await promisify(execFile)(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", t.server.url], { timeout: 30_000 });
    const methods = stdout.split("\n");
    for (const m of StorageService.methods) expect(methods).toContain(`gms.v1.StorageService/${m.name}`);
  });

  it("calls CreateData by reflection", async () => {
    const { stdout } = await promisify(execFile)(
      BUF,
      ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", '{"ttl_seconds": 60, "entries": {"k": {"text": "from buf"}}}', `${t.server.url}/gms.v1.StorageService/CreateData`],
      { timeout: 30_000 },
    );
    const { dataId } = JSON.parse(stdout) as { dataId: string };
    const row = (await t.server.app.db.knex("storage_entries").where({ data_id: dataId, entry_key: "k" }).first()) as { value: Uint8Array } | undefined;
    expect(Buffer.from(row?.value ?? []).toString()).toBe("from buf");
  });
});
