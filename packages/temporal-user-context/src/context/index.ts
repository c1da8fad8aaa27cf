export * from './errors.js';
export * from './failure.js';
export * from './schema.js';
export * from './system-principal.js';
