// Globals the web client's scripts use that no module declares (for tsc --checkJs; see jsconfig.json).

/** The vendored Swagger UI (static/vendor/swagger-ui/swagger-ui-bundle.js), loaded by /docs before docs.js. */
declare const SwaggerUIBundle: ((options: Record<string, unknown>) => unknown) & { presets: { apis: unknown } };

interface Window {
  /** docs.js keeps the Swagger UI instance here, for the console. */
  ui: unknown;
}
