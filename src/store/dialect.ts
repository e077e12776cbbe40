/** Dialect is the kind of database behind the store. */
export type Dialect = "sqlite" | "mysql";
