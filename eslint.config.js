// eslint.config.js lints the TypeScript sources with the recommended type-aware rules.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["gen/**", "dist/**", "node_modules/**", "clients/js/src/gen/**", "clients/js/dist/**", "clients/js/node_modules/**", "data/**", "bench/results/**", "eslint.config.js", "tmp/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/only-throw-error": "off",
      "@typescript-eslint/no-floating-promises": "error",
      // knex returns untyped rows; the assertions name the row shapes where the query is written.
      "@typescript-eslint/no-unnecessary-type-assertion": "off",
    },
  },
  {
    // The plain-JavaScript examples for users (examples/): the recommended rules, without types.
    files: ["examples/**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: { console: "readonly", setTimeout: "readonly" } },
  },
  // The widget's loader is plain browser JavaScript (checked by web/tsconfig.json, which knows the DOM).
  { files: ["web/**/*.js"], rules: { "no-undef": "off" } },
);
