// A test PKI made with openssl: a CA, a server certificate for localhost and client certificates,
// as an operator makes them once for TLS and mutual TLS.
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const openssl = (...args: string[]) => promisify(execFile)("openssl", args);

/** Pki is a CA, a server certificate for localhost and a client certificate, all signed by the CA, as PEM files. */
export interface Pki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** strangerCert/Key are a client certificate signed by another CA. */
  strangerCert: string;
  strangerKey: string;
}

/** makePki writes a test PKI with openssl: what an operator makes once for mutual TLS. */
export async function makePki(): Promise<Pki> {
  const dir = mkdtempSync(join(tmpdir(), "opengms-tls-"));
  const p = (name: string) => join(dir, name);
  const ca = async (name: string) => openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${name}`, "-keyout", p(`${name}.key`), "-out", p(`${name}.pem`));
  const signed = async (name: string, subject: string, by: string, ext: string) => {
    await openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`));
    writeFileSync(p(`${name}.ext`), ext);
    await openssl("x509", "-req", "-in", p(`${name}.csr`), "-CA", p(`${by}.pem`), "-CAkey", p(`${by}.key`), "-CAcreateserial", "-days", "1", "-extfile", p(`${name}.ext`), "-out", p(`${name}.pem`));
  };
  await ca("ca");
  await ca("other-ca");
  await signed("server", "/CN=localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await signed("client", "/CN=crm-backend", "ca", "extendedKeyUsage=clientAuth\n");
  await signed("stranger", "/CN=stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    caCert: p("ca.pem"),
    serverCert: p("server.pem"),
    serverKey: p("server.key"),
    clientCert: p("client.pem"),
    clientKey: p("client.key"),
    strangerCert: p("stranger.pem"),
    strangerKey: p("stranger.key"),
  };
}
