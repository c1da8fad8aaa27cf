// Every answer the end-to-end tests get, checked against the API's own OpenAPI document: its status
// declared for its route and method, its body valid against the schema declared for that status and
// content type. Found by review: the document declared no success response at all.
import { Ajv, type ValidateFunction } from 'ajv';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

interface Declared {
  content?: Record<string, { schema?: object }>;
}
interface Document {
  paths: Record<string, Record<string, { responses?: Record<string, Declared> }>>;
}

/** A check of answers against `app`'s document (`GET /docs/json`); it throws on an undeclared answer. */
export async function openApiChecker(
  app: FastifyInstance,
): Promise<(method: string, url: string, res: LightMyRequestResponse) => void> {
  const document = JSON.parse((await app.inject({ method: 'GET', url: '/docs/json' })).body) as Document;
  const routes = Object.entries(document.paths).map(([path, operations]) => ({
    path,
    operations,
    pattern: new RegExp(`^${path.replace(/\{[^}/]+\}/g, '[^/]+')}$`),
  }));
  const ajv = new Ajv({ strict: false, allErrors: true });
  const validators = new Map<object, ValidateFunction>();
  return (method, url, res) => {
    const path = url.split('?')[0]!;
    // A path or method no route takes answers the router's 404, which no route declares.
    const route = routes.find((r) => r.pattern.test(path));
    const operation = route?.operations[method.toLowerCase()];
    if (!route || !operation) return;
    const status = String(res.statusCode);
    const where = `${method} ${route.path} ${status}`;
    const declared = operation.responses?.[status] ?? operation.responses?.[`${status[0]}XX`];
    if (!declared) throw new Error(`${where}: a status the OpenAPI document does not declare`);
    if (!declared.content) {
      if (res.body !== '') throw new Error(`${where}: a body the document does not declare`);
      return;
    }
    const type = String(res.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    const schema = declared.content[type]?.schema;
    if (!schema) throw new Error(`${where}: content type ${type} is not declared`);
    let validate = validators.get(schema);
    if (!validate) {
      validate = ajv.compile(schema);
      validators.set(schema, validate);
    }
    if (!validate(JSON.parse(res.body)))
      throw new Error(`${where}: ${ajv.errorsText(validate.errors)}; the answer: ${res.body.slice(0, 400)}`);
  };
}
