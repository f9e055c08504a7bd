// The dev chat page (crates/gateway/assets/index.html) imports this client's build, which the
// gateway embeds from crates/gateway/assets/client/. This copies dist/*.js there, or with
// --check fails when the committed copies differ from dist (build first: the npm scripts do).
// No dependencies: node:fs only.

import { readdirSync, readFileSync, writeFileSync, rmSync, mkdirSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, "..", "dist");
const assets = path.resolve(here, "..", "..", "..", "crates", "gateway", "assets", "client");
const check = process.argv.includes("--check");

const modules = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".js")).sort() : []);
// The MessagePack codec imports `@msgpack/msgpack` by its package name, which a page without a
// bundler cannot resolve; the chat page speaks JSON.
const built = modules(dist).filter((f) => f !== "msgpack.js");
if (built.length === 0) {
  console.error(`assets: no .js files in ${dist}: run npm run build first`);
  process.exit(1);
}

if (check) {
  const committed = modules(assets);
  const problems = [];
  for (const file of built) {
    if (!committed.includes(file)) problems.push(`${file} is missing`);
    else if (!readFileSync(path.join(dist, file)).equals(readFileSync(path.join(assets, file)))) {
      problems.push(`${file} differs from the build`);
    }
  }
  for (const file of committed) if (!built.includes(file)) problems.push(`${file} is not built any more`);
  if (problems.length > 0) {
    console.error(`crates/gateway/assets/client/ is stale: ${problems.join("; ")}.`);
    console.error("Refresh it with: cd clients/typescript && npm run assets (then commit the result).");
    process.exit(1);
  }
  console.log(`crates/gateway/assets/client/ matches the build (${built.length} modules).`);
} else {
  mkdirSync(assets, { recursive: true });
  for (const file of modules(assets)) if (!built.includes(file)) rmSync(path.join(assets, file));
  for (const file of built) writeFileSync(path.join(assets, file), readFileSync(path.join(dist, file)));
  console.log(`copied ${built.join(", ")} to crates/gateway/assets/client/`);
}
