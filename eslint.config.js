// ESLint for the web client (sitecomms/web) and the Node compatibility scenarios (tests/compat):
// plain ES modules and CommonJS, no build step (scripts/test runs it).
// Every file gets the recommended rules plus no-unused-vars and no-undef. The page modules see
// browser globals; the service worker (sitecomms/web/sw.js) sees service-worker globals only;
// docs.js is a classic script that starts the vendored Swagger UI. Vendored code is not linted.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/", "sitecomms/web/static/vendor/", ".venv/", "build/", "htmlcov/", "test-artifacts/"] },
  {
    files: ["**/*.js"],
    ...js.configs.recommended,
    languageOptions: { ecmaVersion: 2022, sourceType: "module" },
    rules: {
      ...js.configs.recommended.rules,
      "no-unused-vars": ["error", { args: "after-used", caughtErrors: "none", ignoreRestSiblings: true }],
      "no-undef": "error",
    },
  },
  { files: ["sitecomms/web/static/**/*.js"], languageOptions: { globals: globals.browser } },
  // __SHELL_BUILD__ is the placeholder the server fills in (server/dashboard.py).
  { files: ["sitecomms/web/sw.js"], languageOptions: { globals: { ...globals.serviceworker, __SHELL_BUILD__: "readonly" } } },
  {
    files: ["sitecomms/web/static/docs.js"],
    languageOptions: { sourceType: "script", globals: { ...globals.browser, SwaggerUIBundle: "readonly" } },
  },
  { files: ["eslint.config.js"], languageOptions: { globals: globals.node } },
  // The Node scenarios that drive the real supabase-js and WatermelonDB (tests/compat/).
  {
    files: ["**/*.mjs", "**/*.cjs"],
    ...js.configs.recommended,
    languageOptions: { ecmaVersion: 2022, globals: globals.node },
    rules: {
      ...js.configs.recommended.rules,
      "no-unused-vars": ["error", { args: "after-used", caughtErrors: "none", ignoreRestSiblings: true }],
      "no-undef": "error",
    },
  },
  { files: ["**/*.mjs"], languageOptions: { sourceType: "module" } },
  { files: ["**/*.cjs"], languageOptions: { sourceType: "commonjs" } },
];
