DROP TABLE category_fanouts;
DROP TABLE categories;
