// Copies the built browser files of the page's libraries from node_modules into vendor/ (served with the
// page; no CDN at run time) and axe-core into tests/support/vendor/ (the accessibility check injects it).
// Run after changing a version in package.json:  npm ci && npm run vendor   (from functions/dev/demo)
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

const files = {
  marked: [["lib/marked.umd.js", "vendor/marked.umd.js"], ["LICENSE", "vendor/marked.LICENSE.txt"]],
  dompurify: [["dist/purify.min.js", "vendor/purify.min.js"], ["LICENSE", "vendor/dompurify.LICENSE.txt"]],
  "chart.js": [["dist/chart.umd.min.js", "vendor/chart.umd.min.js"], ["LICENSE.md", "vendor/chart.js.LICENSE.txt"]],
  "axe-core": [["axe.min.js", "../../../tests/support/vendor/axe.min.js"], ["LICENSE", "../../../tests/support/vendor/axe-core.LICENSE.txt"]],
};
const versions = {};
mkdirSync("vendor", { recursive: true });
mkdirSync("../../../tests/support/vendor", { recursive: true });
for (const [name, pairs] of Object.entries(files)) {
  versions[name] = JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8")).version;
  for (const [from, to] of pairs) copyFileSync(`node_modules/${name}/${from}`, to);
}
writeFileSync("vendor/versions.json", JSON.stringify(versions, null, 2) + "\n");
console.log("vendored", versions);
