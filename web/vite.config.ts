// web/vite.config.ts is the build of the pages (scripts/build-web.mjs runs it once per page, with
// the page's folder as root): each page is its own small bundle, its files under dist/web/<page>/,
// addressed relative to the page (base "./"), so that they work wherever opengms is mounted. The
// client package is compiled from its sources (clients/js/src): no separate build of it first.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

/** GMS is where `npx vite web/chat --config web/vite.config.ts` (the dev server) sends the RPCs. */
const GMS = process.env["GMS"] ?? "http://localhost:8080";

export default defineConfig({
  base: "./",
  resolve: {
    alias: { "@opengms/client": fileURLToPath(new URL("../clients/js/src/index.ts", import.meta.url)) },
  },
  build: {
    target: "es2022",
    emptyOutDir: true,
    // Inlined images would need `data:` in the pages' CSP for everything; files stay files.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: {
    proxy: { "^/(gms\\.v1|grpc\\.health\\.v1)\\.": GMS },
  },
  clearScreen: false,
});
