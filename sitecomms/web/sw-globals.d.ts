// Types for the service worker's project (jsconfig.sw.json): the build the server writes in,
// (the page modules it imports by URL are checked by jsconfig.json).
declare const __SHELL_BUILD__: { version: string; files: Record<string, string> };

