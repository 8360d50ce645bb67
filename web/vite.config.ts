// The console's build: `npm run build:web` runs `vite build web`, writing web/dist for the API server.
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The server's Content-Security-Policy allows no inline script: keep every script in a file.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
  // `vite web` (dev) proxies the API to a locally running `npm start`.
  server: { proxy: { '/api': 'http://127.0.0.1:8787' } },
});
