DROP TABLE restore_fences;
