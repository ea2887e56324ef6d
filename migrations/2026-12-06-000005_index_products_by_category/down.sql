DROP INDEX CONCURRENTLY IF EXISTS products_category_path;
