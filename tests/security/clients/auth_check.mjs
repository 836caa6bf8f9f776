// The JavaScript client against a sidecar with --auth-token-file and mutual TLS: with the token and the TLS
// options it lists agents; without the token it gets UNAUTHENTICATED. Env: MOORAGE_TEST_SECURE_GRPC (host:port),
// MOORAGE_TEST_TOKEN, MOORAGE_TEST_CA, MOORAGE_TEST_CLIENT_CERT, MOORAGE_TEST_CLIENT_KEY. Prints one JSON line.
import { readFileSync } from "node:fs";
import { MoorageClient } from "../../../client/js/dist/index.js";

const env = process.env;
const tls = { ca: readFileSync(env.MOORAGE_TEST_CA), cert: readFileSync(env.MOORAGE_TEST_CLIENT_CERT), key: readFileSync(env.MOORAGE_TEST_CLIENT_KEY) };
const out = {};
const good = new MoorageClient(env.MOORAGE_TEST_SECURE_GRPC, { token: env.MOORAGE_TEST_TOKEN, tls });
out.agents = (await good.agents()).length;
good.close();
const noToken = new MoorageClient(env.MOORAGE_TEST_SECURE_GRPC, { tls });
try {
  await noToken.agents();
  out.noToken = "OK";
} catch (e) {
  out.noToken = e.codeName;
}
noToken.close();
console.log(JSON.stringify(out));
