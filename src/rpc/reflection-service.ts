import { create, createRegistry, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** ReflectionRequest is the shape v1 and v1alpha requests share. */
type ReflectionRequest = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/** withDependencies lists a file and everything it imports, the file itself first. */
function withDependencies(file: DescFile): DescFile[] {
  const out: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    out.push(f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  return out;
}

/**
 * createReflector answers reflection requests from the generated descriptors of the served
 * services, so grpcurl, `buf curl` and Postman need no .proto files. It returns the response in the
 * plain shape both reflection versions use.
 */
function createReflector(services: readonly DescService[]) {
  // DescFile.name lacks the ".proto" suffix; reflection asks by the file's full name, as in its proto.
  const files = new Map(services.flatMap((s) => withDependencies(s.file)).map((f) => [f.proto.name, f]));
  const registry = createRegistry(...files.values());
  const fileResponse = (file: DescFile) => ({
    case: "fileDescriptorResponse" as const,
    value: { fileDescriptorProto: withDependencies(file).map((f) => toBinary(FileDescriptorProtoSchema, f.proto)) },
  });
  const notFound = (message: string) => ({ case: "errorResponse" as const, value: { errorCode: 5, errorMessage: message } });

  const fileOfSymbol = (symbol: string): DescFile | undefined => {
    const direct = registry.get(symbol);
    if (direct !== undefined) return direct.file;
    // A method: look up its service.
    const service = registry.getService(symbol.slice(0, symbol.lastIndexOf(".")));
    return service?.methods.some((m) => `${service.typeName}.${m.name}` === symbol) === true ? service.file : undefined;
  };

  return (req: ReflectionRequest) => {
    const m = req.messageRequest;
    switch (m.case) {
      case "listServices":
        return { case: "listServicesResponse" as const, value: { service: services.map((s) => ({ name: s.typeName })) } };
      case "fileByFilename": {
        const file = files.get(m.value);
        return file === undefined ? notFound(`file ${m.value} not found`) : fileResponse(file);
      }
      case "fileContainingSymbol": {
        const file = fileOfSymbol(m.value);
        return file === undefined ? notFound(`symbol ${m.value} not found`) : fileResponse(file);
      }
      case "fileContainingExtension": {
        const message = registry.getMessage(m.value.containingType);
        const ext = message === undefined ? undefined : registry.getExtensionFor(message, m.value.extensionNumber);
        return ext === undefined ? notFound(`extension ${m.value.containingType}/${m.value.extensionNumber} not found`) : fileResponse(ext.file);
      }
      case "allExtensionNumbersOfType": {
        const message = registry.getMessage(m.value);
        if (message === undefined) return notFound(`type ${m.value} not found`);
        const numbers: number[] = [];
        for (const d of registry) if (d.kind === "extension" && d.extendee.typeName === m.value) numbers.push(d.number);
        return { case: "allExtensionNumbersResponse" as const, value: { baseTypeName: m.value, extensionNumber: numbers } };
      }
      default:
        return { case: "errorResponse" as const, value: { errorCode: 3, errorMessage: "empty reflection request" } };
    }
  };
}

/** reflectionServices implements grpc.reflection.v1 and v1alpha over the given services. */
export function reflectionServices(services: readonly DescService[]): {
  v1: ServiceImpl<typeof v1.ServerReflection>;
  v1alpha: ServiceImpl<typeof v1alpha.ServerReflection>;
} {
  const reflect = createReflector(services);
  return {
    v1: {
      async *serverReflectionInfo(requests) {
        for await (const req of requests) {
          yield create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: reflect(req) });
        }
      },
    },
    v1alpha: {
      async *serverReflectionInfo(requests) {
        for await (const req of requests) {
          yield create(v1alpha.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: reflect(req) });
        }
      },
    },
  };
}
