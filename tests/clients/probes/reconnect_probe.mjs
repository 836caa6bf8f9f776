// The JavaScript client across a gateway restart: lists agents every PROBE_INTERVAL_MS (default 500) through
// MOORAGE_ADDRESS and prints one JSON line per call ({"t": epoch seconds, "ok": bool, "code": status name}) until
// the file PROBE_STOP exists or PROBE_SECONDS (default 180) have passed. tests/clients/test_reconnect.py reads it.
import { existsSync } from "node:fs";
import { MoorageClient } from "../../../client/js/dist/index.js";

const env = process.env;
const interval = Number(env.PROBE_INTERVAL_MS ?? 500);
const until = Date.now() + 1000 * Number(env.PROBE_SECONDS ?? 180);
const client = new MoorageClient(env.MOORAGE_ADDRESS);
while (!existsSync(env.PROBE_STOP) && Date.now() < until) {
  const line = { t: Date.now() / 1000, ok: true };
  try {
    await client.agents();
  } catch (e) {
    Object.assign(line, { ok: false, code: e.codeName ?? String(e) });
  }
  console.log(JSON.stringify(line));
  await new Promise((resolve) => setTimeout(resolve, interval));
}
client.close();
