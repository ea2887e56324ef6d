DROP TABLE product_types;
