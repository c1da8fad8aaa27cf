import { isUuid, iso, type Scope } from './common.js';

export interface WorkspaceDocument {
  id: string;
  workspaceId: string;
  title: string;
  body: string;
  createdBy: string;
  createdAt: string;
}

interface DocumentRow {
  id: string;
  workspace_id: string;
  title: string;
  body: string;
  created_by: string;
  created_at: Date | string;
}

const COLUMNS = 'id::text as id, workspace_id, title, body, created_by, created_at';

function toDocument(r: DocumentRow): WorkspaceDocument {
  return {
    id: r.id,
    workspaceId: r.workspace_id,
    title: r.title,
    body: r.body,
    createdBy: r.created_by,
    createdAt: iso(r.created_at),
  };
}

/** Escapes LIKE wildcards so a search term matches literally. */
function likePattern(term: string): string {
  return `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** Documents of the scope's workspace; what the agent's workspace-documents tool reads. */
export class DocumentRepository {
  constructor(private readonly scope: Scope) {}

  async create(input: { title: string; body: string }): Promise<WorkspaceDocument> {
    const { rows } = await this.scope.query<DocumentRow>(
      `insert into documents (title, body) values ($1, $2) returning ${COLUMNS}`,
      [input.title, input.body],
    );
    return toDocument(rows[0] as DocumentRow);
  }

  async get(id: string): Promise<WorkspaceDocument | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<DocumentRow>(`select ${COLUMNS} from documents where id = $1`, [
      id,
    ]);
    return rows[0] ? toDocument(rows[0]) : undefined;
  }

  async findByTitle(title: string): Promise<WorkspaceDocument[]> {
    const { rows } = await this.scope.query<DocumentRow>(
      `select ${COLUMNS} from documents where title = $1 order by created_at, id`,
      [title],
    );
    return rows.map(toDocument);
  }

  /** Case-insensitive search in title and body; the term is a bind parameter and matched literally. */
  async search(term: string, limit = 20): Promise<WorkspaceDocument[]> {
    const { rows } = await this.scope.query<DocumentRow>(
      `select ${COLUMNS} from documents where title ilike $1 or body ilike $1 order by created_at, id limit $2`,
      [likePattern(term), limit],
    );
    return rows.map(toDocument);
  }

  async list(limit = 100): Promise<WorkspaceDocument[]> {
    const { rows } = await this.scope.query<DocumentRow>(
      `select ${COLUMNS} from documents order by created_at, id limit $1`,
      [limit],
    );
    return rows.map(toDocument);
  }
}
